// The threads of a run: the calling thread plus sleeping pool workers, with fork handled
// (a process that forks after a run must not hang in the child, as it does with OpenMP).
#pragma once

#include <pthread.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "isa.hpp"

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

/// Collects the first exception thrown on any thread of a parallel step.
class ErrorSlot {
public:
    void capture() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
    }
    bool failed() const { return failed_.load(std::memory_order_relaxed); }
    void rethrow() {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::mutex mutex_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

/// Spins for up to about this long before sleeping on a condition variable: steps of a run
/// follow each other within microseconds, and waking a sleeping thread costs more than that.
constexpr auto kSpin = std::chrono::microseconds(200);

/// Spins until `ready()` or kSpin has passed; true if ready.
template <class Ready>
bool spin_until(Ready ready) {
    const auto end = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
        if (ready()) return true;
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return false;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/// A persistent thread that runs one task at a time. Never destroyed: idle ones sleep.
class Worker {
public:
    Worker() : thread_([this] { loop(); }) {}

    void start(std::function<void()> task) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = std::move(task);
            has_task_.store(true, std::memory_order_release);
        }
        wake_.notify_one();
    }

private:
    void loop() {
        for (;;) {
            if (!spin_until([this] { return has_task_.load(std::memory_order_acquire); })) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [this] { return has_task_.load(std::memory_order_relaxed); });
            }
            std::function<void()> task;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                task = std::move(task_);
                has_task_.store(false, std::memory_order_relaxed);
            }
            task();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::function<void()> task_;
    std::atomic<bool> has_task_{false};
    std::thread thread_;  // last: starts once the members above exist
};

/// The idle workers of the process, shared by concurrent runs (each run takes its own).
/// Workers persist between runs because OpenBLAS gives every new thread fresh GEMM buffers,
/// which cost milliseconds of page faults; they sleep while idle. A forked child starts
/// with an empty pool (the parent's threads do not exist there), so forking is safe.
class WorkerPool {
public:
    static WorkerPool& get() {
        static std::once_flag once;
        std::call_once(once, [] {
            current() = new WorkerPool;  // never freed: workers outlive every run
            pthread_atfork(nullptr, nullptr, [] { current() = new WorkerPool; });
        });
        return *current();
    }

    std::vector<Worker*> acquire(std::size_t count) {
        std::vector<Worker*> workers;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            while (workers.size() < count && !idle_.empty()) {
                workers.push_back(idle_.back());
                idle_.pop_back();
            }
        }
        try {
            while (workers.size() < count) workers.push_back(new Worker);
        } catch (...) {
            release(workers);
            throw;
        }
        return workers;
    }

    void release(const std::vector<Worker*>& workers) {
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.insert(idle_.end(), workers.begin(), workers.end());
    }

private:
    static WorkerPool*& current() {
        static WorkerPool* pool = nullptr;
        return pool;
    }

    std::mutex mutex_;
    std::vector<Worker*> idle_;
};

/// `size` threads for one run: the caller (thread 0) and size - 1 pool workers, returned to
/// the pool when the run ends.
class Team {
public:
    explicit Team(int size) : workers_(WorkerPool::get().acquire(size > 1 ? size - 1 : 0)) {}
    ~Team() { WorkerPool::get().release(workers_); }
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;

    /// Runs body(0) on the calling thread and body(i) on each worker i that starts before
    /// body(0) has returned; returns when the started ones have finished. A worker the
    /// scheduler has not run by then (a loaded machine) is not waited for: bodies share their
    /// work through a JobCounter, so once body(0) returns every job is taken. The body must
    /// not throw (catch into an ErrorSlot).
    void run(const std::function<void(int)>& body) {
        if (workers_.empty()) {
            body(0);
            return;
        }
        // Shared with the workers' tasks: one that wakes after run() has returned finds its
        // claim cancelled, and touches nothing but the step it keeps alive.
        auto step = std::make_shared<Step>(workers_.size(), body);
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            workers_[i]->start([step, i] {
                int posted = kPosted;
                if (!step->claims[i].compare_exchange_strong(posted, kRunning,
                                                             std::memory_order_acq_rel))
                    return;  // cancelled
                step->body(static_cast<int>(i) + 1);
                std::lock_guard<std::mutex> lock(step->mutex);  // pairs with the wait below
                step->claims[i].store(kFinished, std::memory_order_release);
                step->done.notify_one();
            });
        }
        body(0);
        for (auto& claim : step->claims) {
            int posted = kPosted;
            claim.compare_exchange_strong(posted, kCancelled, std::memory_order_acq_rel);
        }
        auto finished = [&step] {
            for (const auto& claim : step->claims)
                if (claim.load(std::memory_order_acquire) == kRunning) return false;
            return true;
        };
        if (!spin_until(finished)) {
            std::unique_lock<std::mutex> lock(step->mutex);
            step->done.wait(lock, finished);
        }
    }

private:
    enum : int { kPosted, kRunning, kFinished, kCancelled };

    struct Step {
        Step(std::size_t workers, const std::function<void(int)>& body_)
            : body(body_), claims(workers) {
            for (auto& claim : claims) claim.store(kPosted, std::memory_order_relaxed);
        }
        const std::function<void(int)>& body;  // used only by a worker whose claim is running
        std::vector<std::atomic<int>> claims;
        std::mutex mutex;
        std::condition_variable done;
    };

    std::vector<Worker*> workers_;
};

/// Hands out job indices 0, 1, ... to the threads of a step, in order (dynamic scheduling).
class JobCounter {
public:
    explicit JobCounter(std::size_t jobs) : jobs_(jobs) {}
    /// The next job, or false when all are taken.
    bool next(std::size_t& job) {
        job = next_.fetch_add(1, std::memory_order_relaxed);
        return job < jobs_;
    }

private:
    const std::size_t jobs_;
    std::atomic<std::size_t> next_{0};
};

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
