// The threads of one run. They are started by the run and joined when it ends, so no thread
// outlives a call: the process can fork afterwards (multiprocessing, dask) without the hang
// that a persistent OpenMP pool causes in the child.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace initscope {

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

/// `size` threads: the caller (thread 0) and size - 1 workers that wait for steps.
class Team {
public:
    explicit Team(int size) : size_(size < 1 ? 1 : size) {
        workers_.reserve(static_cast<std::size_t>(size_ - 1));
        try {
            for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { work(i); });
        } catch (...) {
            stop();
            throw;
        }
    }
    ~Team() { stop(); }
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;

    int size() const { return size_; }

    /// Runs body(thread) on every thread of the team and returns when all have finished.
    /// The body must not throw (catch into an ErrorSlot).
    void run(const std::function<void(int)>& body) {
        if (size_ == 1) {
            body(0);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            body_ = &body;
            pending_ = size_ - 1;
            ++step_;
        }
        wake_.notify_all();
        body(0);
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return pending_ == 0; });
        body_ = nullptr;
    }

private:
    void work(int index) {
        std::size_t seen = 0;
        for (;;) {
            const std::function<void(int)>* body;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || step_ != seen; });
                if (stopping_) return;
                seen = step_;
                body = body_;
            }
            (*body)(index);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (--pending_ == 0) done_.notify_one();
            }
        }
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& worker : workers_)
            if (worker.joinable()) worker.join();
        workers_.clear();
    }

    const int size_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int)>* body_ = nullptr;
    std::size_t step_ = 0;
    int pending_ = 0;
    bool stopping_ = false;
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

}  // namespace initscope
