// Streaming per-layer statistics: per-unit moments (mergeable, Chan et al.), min and max
// over finite values, the histogram and the counts of backends/reference.py's _layer_stats.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace initscope {

/// The histogram of post-activation values: `bins` equal bins of [low, high].
struct HistSpec {
    int bins;
    double low, high;
    double scale;  // bins / (high - low), as the reference computes it
    bool bounded;  // the activation has a saturation range
    double sat_low, sat_high;
};

/// Per-unit moments of n samples: the mean and M2, the sum of squared deviations from it.
struct UnitMoments {
    std::int64_t n = 0;
    std::vector<double> mean, m2;

    void reset(std::size_t width) {
        n = 0;
        mean.assign(width, 0.0);
        m2.assign(width, 0.0);
    }

    /// Chan et al.'s merge of another set of n_b samples per unit (means mean_b, M2 m2_b).
    void merge(std::int64_t n_b, const double* mean_b, const double* m2_b) {
        if (n_b == 0) return;
        const std::size_t width = mean.size();
        if (n == 0) {
            std::copy(mean_b, mean_b + width, mean.begin());
            std::copy(m2_b, m2_b + width, m2.begin());
            n = n_b;
            return;
        }
        const double total = static_cast<double>(n + n_b);
        const double w_b = static_cast<double>(n_b) / total;
        const double w_ab = static_cast<double>(n) * static_cast<double>(n_b) / total;
        for (std::size_t j = 0; j < width; ++j) {
            const double delta = mean_b[j] - mean[j];
            mean[j] += delta * w_b;
            m2[j] += m2_b[j] + delta * delta * w_ab;
        }
        n += n_b;
    }
};

/// The statistics of one tile of rows, filled row by row while the tile is in cache.
/// Moments are shifted sums: per column, the sums of (x - K) and (x - K)^2 where K is the
/// tile's first row, which stays accurate because K lies within a few std of the mean.
struct TileStats {
    std::size_t width = 0;
    int hist_stride = 0;  // bins + 3: the bins, then below, above and NaN
    std::int64_t rows = 0;
    std::vector<double> pre_shift, pre_s1, pre_s2, post_shift, post_s1, post_s2, min, max;
    std::vector<std::int64_t> hist;  // 4 interleaved copies, so increments rarely collide
    std::int64_t zeros = 0, saturated = 0, nonfinite = 0, pre_nonfinite = 0;
    std::vector<std::int32_t> index;  // histogram slot of each column of the current row
    std::vector<double> mean_buf, m2_buf;

    void reset(std::size_t w, int bins) {
        width = w;
        hist_stride = bins + 3;
        rows = 0;
        for (auto* v : {&pre_shift, &pre_s1, &pre_s2, &post_shift, &post_s1, &post_s2})
            v->assign(w, 0.0);
        min.assign(w, std::numeric_limits<double>::infinity());
        max.assign(w, -std::numeric_limits<double>::infinity());
        hist.assign(4 * static_cast<std::size_t>(hist_stride), 0);
        zeros = saturated = nonfinite = pre_nonfinite = 0;
        index.assign(w, 0);
    }

    /// Accumulates one row: `pre` (H) and `post` (the activation of H).
    template <class T>
    void add_row(const T* __restrict pre, const T* __restrict post, const HistSpec& spec) {
        const std::size_t w = width;
        if (rows == 0) {
            for (std::size_t j = 0; j < w; ++j) {
                pre_shift[j] = static_cast<double>(pre[j]);
                post_shift[j] = static_cast<double>(post[j]);
            }
        }
        ++rows;
        if (spec.bounded)
            moments_row<T, true>(pre, post, spec);
        else
            moments_row<T, false>(pre, post, spec);
        histogram_row(post, spec);
    }

    /// The tile's per-column means and M2 (into mean_buf, m2_buf).
    void finish_moments(bool post_values) {
        const auto& shift = post_values ? post_shift : pre_shift;
        const auto& s1 = post_values ? post_s1 : pre_s1;
        const auto& s2 = post_values ? post_s2 : pre_s2;
        mean_buf.resize(width);
        m2_buf.resize(width);
        const double n = static_cast<double>(rows);
        for (std::size_t j = 0; j < width; ++j) {
            mean_buf[j] = shift[j] + s1[j] / n;
            const double m2 = s2[j] - s1[j] * s1[j] / n;
            m2_buf[j] = m2 > 0.0 ? m2 : 0.0;
        }
    }

private:
    template <class T, bool Bounded>
    void moments_row(const T* __restrict pre, const T* __restrict post, const HistSpec& spec) {
        constexpr double big = std::numeric_limits<double>::max();
        constexpr double inf = std::numeric_limits<double>::infinity();
        double* __restrict ks = pre_shift.data();
        double* __restrict s1 = pre_s1.data();
        double* __restrict s2 = pre_s2.data();
        double* __restrict kp = post_shift.data();
        double* __restrict p1 = post_s1.data();
        double* __restrict p2 = post_s2.data();
        double* __restrict lo = min.data();
        double* __restrict hi = max.data();
        std::int64_t z = 0, sat = 0, nf = 0, pre_nf = 0;
        const double sat_low = spec.sat_low, sat_high = spec.sat_high;
        for (std::size_t j = 0; j < width; ++j) {
            const double h = static_cast<double>(pre[j]);
            const double a = static_cast<double>(post[j]);
            const double dh = h - ks[j];
            s1[j] += dh;
            s2[j] += dh * dh;
            const double da = a - kp[j];
            p1[j] += da;
            p2[j] += da * da;
            const bool finite = std::abs(a) <= big;
            const double a_lo = finite ? a : inf;
            const double a_hi = finite ? a : -inf;
            lo[j] = a_lo < lo[j] ? a_lo : lo[j];
            hi[j] = a_hi > hi[j] ? a_hi : hi[j];
            z += a == 0.0;
            nf += !finite;
            pre_nf += !(std::abs(h) <= big);
            if (Bounded) sat += (a <= sat_low) | (a >= sat_high);
        }
        zeros += z;
        saturated += sat;
        nonfinite += nf;
        pre_nonfinite += pre_nf;
    }

    template <class T>
    void histogram_row(const T* __restrict post, const HistSpec& spec) {
        const double low = spec.low, high = spec.high, scale = spec.scale;
        const int bins = spec.bins;
        const double top = static_cast<double>(bins);
        std::int32_t* __restrict idx = index.data();
        for (std::size_t j = 0; j < width; ++j) {
            const double a = static_cast<double>(post[j]);
            double d = (a - low) * scale;  // the reference's floor((a - low) * scale)
            d = d < top ? d : top;         // keeps the conversion defined (NaN, inf, huge)
            d = d > 0.0 ? d : 0.0;
            std::int32_t inside = static_cast<std::int32_t>(d);  // d >= 0: truncation is floor
            inside = inside < bins - 1 ? inside : bins - 1;
            const std::int32_t outside = a < low ? bins : (a > high ? bins + 1 : bins + 2);
            idx[j] = (a >= low && a <= high) ? inside : outside;
        }
        std::int64_t* __restrict h = hist.data();
        const std::size_t s = static_cast<std::size_t>(hist_stride);
        std::size_t j = 0;
        for (; j + 4 <= width; j += 4) {
            ++h[idx[j]];
            ++h[s + idx[j + 1]];
            ++h[2 * s + idx[j + 2]];
            ++h[3 * s + idx[j + 3]];
        }
        for (; j < width; ++j) ++h[idx[j]];
    }
};

/// Everything one layer accumulates over all its tiles and chunks, merged in a fixed order.
struct LayerStats {
    UnitMoments post, pre;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::vector<std::int64_t> hist;  // bins
    std::int64_t below = 0, above = 0, zeros = 0, saturated = 0, nonfinite = 0,
                 pre_nonfinite = 0;

    void reset(std::size_t width, int bins) {
        post.reset(width);
        pre.reset(width);
        hist.assign(static_cast<std::size_t>(bins), 0);
    }

    void merge(TileStats& tile) {
        if (tile.rows == 0) return;
        tile.finish_moments(true);
        post.merge(tile.rows, tile.mean_buf.data(), tile.m2_buf.data());
        tile.finish_moments(false);
        pre.merge(tile.rows, tile.mean_buf.data(), tile.m2_buf.data());
        for (std::size_t j = 0; j < tile.width; ++j) {
            min = tile.min[j] < min ? tile.min[j] : min;
            max = tile.max[j] > max ? tile.max[j] : max;
        }
        const std::size_t bins = hist.size();
        const std::size_t s = static_cast<std::size_t>(tile.hist_stride);
        for (int copy = 0; copy < 4; ++copy) {
            const std::int64_t* h = tile.hist.data() + copy * s;
            for (std::size_t b = 0; b < bins; ++b) hist[b] += h[b];
            below += h[bins];
            above += h[bins + 1];
        }
        zeros += tile.zeros;
        saturated += tile.saturated;
        nonfinite += tile.nonfinite;
        pre_nonfinite += tile.pre_nonfinite;
    }

    /// min and max over finite values; NaN where there were none.
    double finite_min() const { return std::isinf(min) ? std::nan("") : min; }
    double finite_max() const { return std::isinf(max) ? std::nan("") : max; }
};

}  // namespace initscope
