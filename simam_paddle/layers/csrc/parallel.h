// The one way this package's CPU operators run work on several threads.
//
// Threads come from the OpenMP runtime that Paddle's oneDNN runs on (Intel's libiomp5 in Paddle's
// x86 wheels): the libraries are linked against it, not GCC's libgomp (see simam_paddle's
// threads.py), so that a process holds one runtime, one thread count and one pool of threads. The
// team is that runtime's omp_get_max_threads(), the count Paddle's math library and oneDNN use,
// set once per process by threads.configure().
//
// Only `omp parallel` itself is used: libiomp5 provides GCC's entry points for parallel regions
// but not those of `schedule(dynamic)` loops, which would bind to libgomp (and, loaded beside
// libiomp5, have every thread run every item). Items go out one at a time to whichever thread is
// free, so a thread that a busy machine deschedules holds up one item, not half the work.

#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace simam {

// Work of fewer values than this runs on the calling thread: waking a team costs more.
constexpr int64_t kParallelMinElements = 32768;

// The size of the last team a parallel region of this library ran with (1 for work run on the
// calling thread); read by tests through simam_parallel_last_team().
inline std::atomic<int> last_team{0};

// Threads for work of `values` values: the runtime's count, or 1 for small work.
inline int team_for(int64_t values) { return values >= kParallelMinElements ? omp_get_max_threads() : 1; }

// body(i, thread_state) for i in [0, items), on `team` threads; each thread makes its state once
// with make_state() (a scratch buffer, say) and passes it to every item it runs.
template <typename MakeState, typename Body>
void for_each_item(int64_t items, int team, const MakeState& make_state, const Body& body) {
  if (team <= 1 || items <= 1) {
    last_team.store(1, std::memory_order_relaxed);
    auto state = make_state();
    for (int64_t i = 0; i < items; ++i) body(i, state);
    return;
  }
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(team, items)))
  {
    if (omp_get_thread_num() == 0) last_team.store(omp_get_num_threads(), std::memory_order_relaxed);
    auto state = make_state();
    for (int64_t i = next++; i < items; i = next++) body(i, state);
  }
}

}  // namespace simam

// For tests: the team size of this library's last parallel region (0 before any ran).
extern "C" inline __attribute__((used, visibility("default"))) int simam_parallel_last_team() {
  return simam::last_team.load(std::memory_order_relaxed);
}
