// Header hygiene: included twice, alone, as C++17.
#include "switchyard.h"
#include "switchyard.h"

int main() {
  sy_status s = SY_OK;
  return s == SY_OK && sy_version() != nullptr ? 0 : 1;
}
