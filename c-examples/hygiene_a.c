/* Header hygiene: included twice, alone, as C11 (and as C++17 via hygiene.cpp). */
#include "switchyard.h"
#include "switchyard.h"

int main(void) { return sy_version() == 0; }
