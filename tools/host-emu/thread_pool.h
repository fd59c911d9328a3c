// thread_pool.h — the OS threads the shim runs CUDA threads on (shim.h's run_together).
#pragma once

#include <functional>
#include <latch>
#include <memory>
#include <semaphore>
#include <thread>
#include <vector>

namespace emu {
// OS threads reused from block to block: creating and joining 512 threads costs about 50 ms on
// a 2-core machine, more than most blocks' work. run_all starts every task at once (they may
// wait for each other at barriers) on idle workers, adding workers as needed, and returns when
// all have finished. Workers never exit (the pool is never destroyed).
class ThreadPool {
 public:
  void run_all(std::vector<std::function<void()>>& tasks) {
    std::latch done(static_cast<ptrdiff_t>(tasks.size()));
    while (workers_.size() < tasks.size()) workers_.push_back(std::make_unique<Worker>());
    for (size_t i = 0; i < tasks.size(); ++i) {
      workers_[i]->task = std::move(tasks[i]);
      workers_[i]->done = &done;
      workers_[i]->go.release();
    }
    done.wait();
  }

 private:
  struct Worker {
    std::binary_semaphore go{0};
    std::function<void()> task;
    std::latch* done = nullptr;
    Worker() {
      std::thread([this] {
        for (;;) {
          go.acquire();
          task();
          task = nullptr;
          done->count_down();
        }
      }).detach();
    }
  };
  std::vector<std::unique_ptr<Worker>> workers_;  // used by one launch at a time (launch_with's lock)
};
inline ThreadPool& thread_pool() {
  static ThreadPool* pool = new ThreadPool;  // never destroyed: its workers outlive main
  return *pool;
}
}  // namespace emu
