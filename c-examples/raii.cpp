// C++ over the C ABI: RAII wrappers own the handles (unique_ptr with the _free
// functions as deleters) and a move-only Pick calls sy_pick_done exactly once.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "switchyard.h"

namespace sy {

struct Error : std::runtime_error {
  sy_status status;
  explicit Error(sy_status s) : std::runtime_error(last()), status(s) {}
  static std::string last() {
    std::string msg(sy_last_error(nullptr, 0) + 1, '\0');
    sy_last_error(&msg[0], msg.size());
    msg.pop_back();
    return msg;
  }
};

inline void check(sy_status s) {
  if (s != SY_OK) throw Error(s);
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};

using RuntimePtr = std::unique_ptr<sy_runtime, Deleter<sy_runtime, sy_runtime_free>>;
using ChannelPtr = std::unique_ptr<sy_channel, Deleter<sy_channel, sy_channel_free>>;
using ReaderPtr = std::unique_ptr<sy_reader, Deleter<sy_reader, sy_reader_free>>;

class Runtime {
 public:
  Runtime() {
    sy_runtime* rt = nullptr;
    check(sy_runtime_new(&rt));
    rt_.reset(rt);
  }
  const sy_runtime* get() const { return rt_.get(); }

 private:
  RuntimePtr rt_;
};

// A finished-or-not pick. Destroying an unfinished one reports CANCELLED.
class Pick {
 public:
  Pick() { std::memset(&r_, 0, sizeof r_); }
  Pick(const Pick&) = delete;
  Pick& operator=(const Pick&) = delete;
  Pick(Pick&& o) noexcept : r_(o.r_), live_(o.live_) { o.live_ = false; }
  ~Pick() {
    if (live_) (void)sy_pick_done(&r_, 1 /* CANCELLED */, 0, nullptr, 0);
  }
  std::string address() const { return std::string(r_.address, r_.address_len); }
  uint64_t id() const { return r_.subchannel_id; }
  void done(uint32_t grpc_code, uint64_t latency_ns) {
    check(sy_pick_done(&r_, grpc_code, latency_ns, nullptr, 0));
    live_ = false;
  }
  sy_pick_result* raw() { return &r_; }
  void arm() { live_ = true; }

 private:
  sy_pick_result r_;
  bool live_ = false;
};

class Reader {
 public:
  explicit Reader(const sy_channel* ch) {
    sy_reader* r = nullptr;
    check(sy_reader_new(ch, &r));
    r_.reset(r);
  }
  // Throws on failure; timeout_ms 0 = don't wait.
  Pick pick(const std::string& method, uint64_t timeout_ms = 0) {
    Pick p;
    check(sy_pick(r_.get(), method.data(), method.size(), nullptr, timeout_ms, false, p.raw()));
    p.arm();
    return p;
  }

 private:
  ReaderPtr r_;
};

class Channel {
 public:
  Channel(const Runtime& rt, const char* config, const sy_host_transport* host) {
    sy_channel* ch = nullptr;
    check(sy_channel_new(rt.get(), "", config, host, nullptr, nullptr, nullptr, &ch));
    ch_.reset(ch);
  }
  void update(const std::vector<std::string>& addrs) {
    std::vector<sy_address> list;
    for (const auto& a : addrs) list.push_back(sy_address{a.c_str(), 0, nullptr});
    check(sy_channel_update_addresses(ch_.get(), list.data(), list.size()));
  }
  void report(uint64_t id, uint32_t state) {
    check(sy_channel_report_subconn_state(ch_.get(), id, state, nullptr));
  }
  void sync() { check(sy_channel_sync(ch_.get())); }
  const sy_channel* get() const { return ch_.get(); }

 private:
  ChannelPtr ch_;
};

}  // namespace sy

// The host: connect requests land in a vector (loop thread), reported from main.
struct Host {
  std::vector<uint64_t> ids;
  static void connect(void* ctx, uint64_t id, const char*, size_t, void*) {
    static_cast<Host*>(ctx)->ids.push_back(id);
  }
  static void shutdown(void*, uint64_t, const char*, size_t, void*) {}
};

#define CHECK(c)                                                   \
  do {                                                             \
    if (!(c)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
      return 1;                                                    \
    }                                                              \
  } while (0)

int main() {
  try {
    Host host;
    sy_host_transport t{&host, nullptr, Host::connect, Host::shutdown, nullptr};
    sy::Runtime rt;
    sy::Channel ch(rt, "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}", &t);
    sy::Reader reader(ch.get());
    ch.update({"127.4.0.1:1", "127.4.0.2:1"});
    ch.sync();
    CHECK(host.ids.size() == 2);
    try {
      reader.pick("/svc/M");
      CHECK(false);
    } catch (const sy::Error& e) {
      CHECK(e.status == SY_NO_SUBCHANNEL);
    }
    for (uint64_t id : host.ids) ch.report(id, SY_STATE_READY);
    ch.sync();
    std::map<std::string, int> counts;
    for (int i = 0; i < 100; i++) {
      sy::Pick p = reader.pick("/svc/M");
      counts[p.address()]++;
      if (i % 2 == 0) p.done(0, 1000);  // else: the destructor reports CANCELLED
    }
    CHECK(counts.size() == 2 && counts["127.4.0.1:1"] == 50 && counts["127.4.0.2:1"] == 50);
    // Destroyed first (reverse order): its destructor finishes it.
    sy::Pick last = reader.pick("/svc/M");
    std::printf("raii: last pick %s\n", last.address().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "raii: %s\n", e.what());
    return 1;
  }
  std::printf("raii: ok\n");
  return 0;
}
