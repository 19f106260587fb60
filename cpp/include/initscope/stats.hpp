// Streaming per-layer statistics: per-unit moments (mergeable, Chan et al.), min and max
// over finite values, the histogram and the counts of backends/numpy.py's _layer_stats.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "isa.hpp"
#include "kernel.hpp"

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

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
        merge_columns(n_b, mean_b, m2_b, 0, mean.size());
        n += n_b;
    }

    /// The same for units [first, first + width) alone, n left as it is: call it for every
    /// block of columns of the n_b samples, then add n_b to n.
    void merge_columns(std::int64_t n_b, const double* mean_b, const double* m2_b,
                       std::size_t first, std::size_t width) {
        if (n_b == 0) return;
        double* __restrict mu = mean.data() + first;
        double* __restrict m = m2.data() + first;
        if (n == 0) {
            std::copy(mean_b, mean_b + width, mu);
            std::copy(m2_b, m2_b + width, m);
            return;
        }
        const double total = static_cast<double>(n + n_b);
        const double w_b = static_cast<double>(n_b) / total;
        const double w_ab = static_cast<double>(n) * static_cast<double>(n_b) / total;
        for (std::size_t j = 0; j < width; ++j) {
            const double delta = mean_b[j] - mu[j];
            mu[j] += delta * w_b;
            m[j] += m2_b[j] + delta * delta * w_ab;
        }
    }
};

/// Histogram counts: the bins, then below, above and NaN, in kCopies interleaved copies
/// filled in turn, so that consecutive values in the same bin do not wait on each other's
/// increment. One per thread: integer counts add up the same in any order.
struct HistCounts {
    static constexpr int kCopies = kHistCopies;
    std::size_t stride = 0;  // bins + 3
    std::vector<std::int64_t> slots;

    void reset(int bins) {
        stride = static_cast<std::size_t>(bins) + 3;
        slots.assign(kCopies * stride, 0);
    }

    /// Counts the histogram slots idx[0 .. count).
    void add(const std::int32_t* __restrict idx, std::size_t count) {
        std::int64_t* __restrict h = slots.data();
        const std::size_t s = stride;
        std::size_t j = 0;
        for (; j + kCopies <= count; j += kCopies) {
#pragma GCC unroll 8
            for (int c = 0; c < kCopies; ++c) ++h[c * s + idx[j + c]];
        }
        for (; j < count; ++j) ++h[idx[j]];
    }

    /// Adds the copies' counts to a histogram and its counts below and above.
    void add_to(std::vector<std::int64_t>& hist, std::int64_t& below, std::int64_t& above) const {
        const std::size_t bins = hist.size();
        for (int copy = 0; copy < kCopies; ++copy) {
            const std::int64_t* h = slots.data() + copy * stride;
            for (std::size_t b = 0; b < bins; ++b) hist[b] += h[b];
            below += h[bins];
            above += h[bins + 1];
        }
    }
};

/// Histogram slot of each value: its bin, or bins (below), bins + 1 (above), bins + 2 (NaN).
template <class T>
inline void bin_values(std::size_t n, const T* __restrict post, std::int32_t* __restrict idx,
                       double low, double high, double scale, int bins) {
    // All in double lanes, one conversion at the end (mixed widths vectorise poorly, and
    // selecting among int32 slots narrows every mask).
    const double last = static_cast<double>(bins - 1);
    const double below = static_cast<double>(bins), above = below + 1.0, nan = below + 2.0;
    for (std::size_t j = 0; j < n; ++j) {
        const double a = static_cast<double>(post[j]);
        const double d = (a - low) * scale;  // the reference's floor((a - low) * scale),
        double slot = d < last ? d : last;   // in [0, bins - 1] where a is inside: truncation
        slot = a > high ? above : slot;      // is floor
        slot = a < low ? below : slot;
        slot = a == a ? slot : nan;
        idx[j] = static_cast<std::int32_t>(slot);
    }
}

/// Per-column means and M2 of `rows` values from their shifted sums: the sums of (x - K)
/// and (x - K)^2 per column, K = shift.
inline void shifted_moments(std::int64_t rows, const std::vector<double>& shift,
                            const std::vector<double>& s1, const std::vector<double>& s2,
                            std::vector<double>& mean, std::vector<double>& m2) {
    const std::size_t width = shift.size();
    mean.resize(width);
    m2.resize(width);
    const double n = static_cast<double>(rows);
    for (std::size_t j = 0; j < width; ++j) {
        mean[j] = shift[j] + s1[j] / n;
        const double m = s2[j] - s1[j] * s1[j] / n;
        m2[j] = m > 0.0 ? m : 0.0;
    }
}

/// Folds per-column minima and maxima into a running min and max.
inline void merge_extrema(const std::vector<double>& lo, const std::vector<double>& hi, double& min,
                          double& max) {
    for (std::size_t j = 0; j < lo.size(); ++j) {
        min = lo[j] < min ? lo[j] : min;
        max = hi[j] > max ? hi[j] : max;
    }
}

/// A running min or max as a run returns it: NaN where no value was finite.
inline double finite_or_nan(double extremum) {
    return std::isinf(extremum) ? std::nan("") : extremum;
}

/// The statistics of one tile of rows, filled a few rows at a time while the tile is in
/// cache. Moments are shifted sums: per column, the sums of (x - K) and (x - K)^2 where K is
/// the tile's first row, which stays accurate because K lies within a few std of the mean.
///
/// Each block of rows is first taken as if every value were finite (sums, zeros, saturated,
/// plain min and max). Its sums of squares tell whether it was: a NaN or an infinity in H or
/// act(H) makes them NaN or inf. Only then is the block taken again, counting the
/// non-finite values and keeping them out of min and max; the sums stand, NaN or inf as the
/// layer's moments are then.
struct TileStats {
    /// Rows accumulated per pass: per-column accumulators are loaded and stored once per
    /// block instead of once per row.
    static constexpr std::size_t kBlock = 4;

    std::size_t width = 0;
    std::int64_t rows = 0;
    std::vector<double> pre_shift, pre_s1, pre_s2, post_shift, post_s1, post_s2, min, max;
    std::vector<double> next_min, next_max;  // a block's min and max, if all its values are finite
    std::vector<double> deriv_sq;            // per column, the sum of act'(H)^2
    std::int64_t zeros = 0, saturated = 0, nonfinite = 0, pre_nonfinite = 0;
    std::vector<std::int32_t> index;  // histogram slot of each value of the current block
    std::vector<double> mean_buf, m2_buf;

    void reset(std::size_t w) {
        width = w;
        rows = 0;
        for (auto* v : {&pre_shift, &pre_s1, &pre_s2, &post_shift, &post_s1, &post_s2, &deriv_sq})
            v->assign(w, 0.0);
        min.assign(w, std::numeric_limits<double>::infinity());
        max.assign(w, -std::numeric_limits<double>::infinity());
        next_min.resize(w);
        next_max.resize(w);
        zeros = saturated = nonfinite = pre_nonfinite = 0;
        index.assign(kBlock * w, 0);
    }

    /// Accumulates `count` <= kBlock consecutive rows (row stride = width): `pre` (H) and
    /// `post` (the activation of H), whose histogram goes to `hist`.
    template <class T>
    void add_rows(const T* __restrict pre, const T* __restrict post, std::size_t count,
                  const HistSpec& spec, HistCounts& hist) {
        const std::size_t w = width;
        if (rows == 0) {
            for (std::size_t j = 0; j < w; ++j) {
                pre_shift[j] = static_cast<double>(pre[j]);
                post_shift[j] = static_cast<double>(post[j]);
            }
        }
        rows += static_cast<std::int64_t>(count);
        if (count == kBlock) {
            add_block<T, kBlock>(pre, post, spec);
        } else {
            for (std::size_t r = 0; r < count; ++r)
                add_block<T, 1>(pre + r * w, post + r * w, spec);
        }
        bin_values(count * w, post, index.data(), spec.low, spec.high, spec.scale, spec.bins);
        hist.add(index.data(), count * w);
    }

    /// Accumulates the squares of `count` rows of act'(H) (row stride = width).
    template <class T>
    void add_derivatives(const T* __restrict d, std::size_t count) {
        double* __restrict sq = deriv_sq.data();
        for (std::size_t r = 0; r < count; ++r)
            for (std::size_t j = 0; j < width; ++j) {
                const double v = static_cast<double>(d[r * width + j]);
                sq[j] += v * v;
            }
    }

    /// The tile's per-column means and M2 (into mean_buf, m2_buf).
    void finish_moments(bool post_values) {
        if (post_values) {
            shifted_moments(rows, post_shift, post_s1, post_s2, mean_buf, m2_buf);
        } else {
            shifted_moments(rows, pre_shift, pre_s1, pre_s2, mean_buf, m2_buf);
        }
    }

private:
    struct Counts {
        std::int64_t zeros, saturated;
        bool finite;
    };

    template <class T, std::size_t R>
    void add_block(const T* pre, const T* post, const HistSpec& spec) {
        const Counts c = spec.bounded ? sums_rows<T, R, true>(width, pre, post, spec)
                                      : sums_rows<T, R, false>(width, pre, post, spec);
        zeros += c.zeros;
        saturated += c.saturated;
        if (c.finite) {
            min.swap(next_min);
            max.swap(next_max);
        } else {
            nonfinite += extremes_rows<T, R>(width, post, min.data(), max.data());
            pre_nonfinite += count_nonfinite<T>(R * width, pre);
        }
    }

    template <class T, std::size_t R, bool Bounded>
    Counts sums_rows(std::size_t w, const T* pre, const T* post, const HistSpec& spec) {
        return sums_kernel<T, R, Bounded>(w, pre, post, pre_shift.data(), pre_s1.data(),
                                          pre_s2.data(), post_shift.data(), post_s1.data(),
                                          post_s2.data(), min.data(), max.data(), next_min.data(),
                                          next_max.data(), spec.sat_low, spec.sat_high);
    }

    // Free-standing, with restrict-qualified parameters (not members), so that these
    // vectorise across columns; the R rows of each column are unrolled into registers.

    /// The sums, zeros and saturated counts of R rows, and their min and max (into next_lo,
    /// next_hi) if every value is finite; `finite` says whether the sums of squares are.
    template <class T, std::size_t R, bool Bounded>
    static Counts sums_kernel(std::size_t w, const T* __restrict pre, const T* __restrict post,
                              const double* __restrict ks, double* __restrict s1,
                              double* __restrict s2, const double* __restrict kp,
                              double* __restrict p1, double* __restrict p2,
                              const double* __restrict lo, const double* __restrict hi,
                              double* __restrict next_lo, double* __restrict next_hi,
                              double sat_low, double sat_high) {
        constexpr double big = std::numeric_limits<double>::max();
        std::int64_t z = 0, sat = 0, bad = 0;
        for (std::size_t j = 0; j < w; ++j) {
            double a1 = s1[j], a2 = s2[j], b1 = p1[j], b2 = p2[j], l = lo[j], u = hi[j];
#pragma GCC unroll 8
            for (std::size_t r = 0; r < R; ++r) {
                const double h = static_cast<double>(pre[r * w + j]);
                const double a = static_cast<double>(post[r * w + j]);
                const double dh = h - ks[j];
                a1 += dh;
                a2 += dh * dh;
                const double da = a - kp[j];
                b1 += da;
                b2 += da * da;
                l = a < l ? a : l;
                u = a > u ? a : u;
                // Counts as 0/1 integers of the lanes' width, so that the loop vectorises.
                z += a == 0.0 ? 1 : 0;
                if (Bounded) sat += ((a <= sat_low) | (a >= sat_high)) ? 1 : 0;
            }
            s1[j] = a1;
            s2[j] = a2;
            p1[j] = b1;
            p2[j] = b2;
            next_lo[j] = l;
            next_hi[j] = u;
            bad += a2 + b2 <= big ? 0 : 1;  // NaN or inf (or a finite square beyond DBL_MAX)
        }
        return {z, sat, bad == 0};
    }

    /// Min and max over the finite values of R rows, in place; returns the count of others.
    template <class T, std::size_t R>
    static std::int64_t extremes_rows(std::size_t w, const T* __restrict post,
                                      double* __restrict lo, double* __restrict hi) {
        constexpr double big = std::numeric_limits<double>::max();
        std::int64_t nf = 0;
        for (std::size_t j = 0; j < w; ++j) {
            double l = lo[j], u = hi[j];
            for (std::size_t r = 0; r < R; ++r) {
                const double a = static_cast<double>(post[r * w + j]);
                const bool finite = std::abs(a) <= big;
                l = finite && a < l ? a : l;
                u = finite && a > u ? a : u;
                nf += finite ? 0 : 1;
            }
            lo[j] = l;
            hi[j] = u;
        }
        return nf;
    }

    template <class T>
    static std::int64_t count_nonfinite(std::size_t n, const T* __restrict values) {
        constexpr double big = std::numeric_limits<double>::max();
        std::int64_t nf = 0;
        for (std::size_t i = 0; i < n; ++i)
            nf += std::abs(static_cast<double>(values[i])) <= big ? 0 : 1;
        return nf;
    }
};

/// Everything one layer accumulates over all its tiles and chunks, merged in a fixed order.
struct LayerStats {
    UnitMoments post, pre;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::vector<std::int64_t> hist;  // bins
    std::int64_t below = 0, above = 0, zeros = 0, saturated = 0, nonfinite = 0, pre_nonfinite = 0;
    double deriv_sq_sum = 0.0;

    void reset(std::size_t width, int bins) {
        post.reset(width);
        pre.reset(width);
        hist.assign(static_cast<std::size_t>(bins), 0);
        deriv_sq_sum = 0.0;
    }

    /// Merges a tile's statistics of columns [first, first + tile.width): a tile gathered in
    /// blocks of columns is merged block by block, from the first column on (the same
    /// operations in the same order as the whole tile at once), `last` for its last block.
    void merge(TileStats& tile, std::size_t first = 0, bool last = true) {
        if (tile.rows == 0) return;
        tile.finish_moments(true);
        post.merge_columns(tile.rows, tile.mean_buf.data(), tile.m2_buf.data(), first, tile.width);
        tile.finish_moments(false);
        pre.merge_columns(tile.rows, tile.mean_buf.data(), tile.m2_buf.data(), first, tile.width);
        if (last) {
            post.n += tile.rows;
            pre.n += tile.rows;
        }
        merge_extrema(tile.min, tile.max, min, max);
        for (std::size_t j = 0; j < tile.width; ++j) deriv_sq_sum += tile.deriv_sq[j];
        zeros += tile.zeros;
        saturated += tile.saturated;
        nonfinite += tile.nonfinite;
        pre_nonfinite += tile.pre_nonfinite;
    }

    void merge(const HistCounts& counts) { counts.add_to(hist, below, above); }

    /// The accumulators as a run returns them (min and max NaN where no value was finite).
    LayerResult result() && {
        LayerResult r;
        r.unit_mean = std::move(post.mean);
        r.unit_m2 = std::move(post.m2);
        r.pre_unit_mean = std::move(pre.mean);
        r.pre_unit_m2 = std::move(pre.m2);
        r.min = finite_or_nan(min);
        r.max = finite_or_nan(max);
        r.hist = std::move(hist);
        r.below = below;
        r.above = above;
        r.zeros = zeros;
        r.saturated = saturated;
        r.nonfinite = nonfinite;
        r.pre_nonfinite = pre_nonfinite;
        r.deriv_sq_sum = deriv_sq_sum;
        return r;
    }
};

/// The statistics of one tile of back-propagated gradients delta: per-column shifted sums
/// (as TileStats), min and max over finite values, and the count of the others.
struct GradTileStats {
    std::size_t width = 0;
    std::int64_t rows = 0;
    std::vector<double> shift, s1, s2, min, max;
    std::int64_t nonfinite = 0;
    std::vector<std::int32_t> index;  // histogram slots of the tile's values
    std::vector<double> mean_buf, m2_buf;

    void reset(std::size_t w) {
        width = w;
        rows = 0;
        for (auto* v : {&shift, &s1, &s2}) v->assign(w, 0.0);
        min.assign(w, std::numeric_limits<double>::infinity());
        max.assign(w, -std::numeric_limits<double>::infinity());
        nonfinite = 0;
    }

    /// Accumulates `count` consecutive rows of delta (row stride = width).
    template <class T>
    void add_rows(const T* __restrict values, std::size_t count) {
        if (rows == 0)
            for (std::size_t j = 0; j < width; ++j) shift[j] = static_cast<double>(values[j]);
        rows += static_cast<std::int64_t>(count);
        for (std::size_t r = 0; r < count; ++r)
            nonfinite += row(width, values + r * width, shift.data(), s1.data(), s2.data(),
                             min.data(), max.data());
    }

    /// The largest finite |delta| of the tile, 0 if there is none.
    double max_abs() const {
        double m = 0.0;
        for (std::size_t j = 0; j < width; ++j) {
            if (min[j] <= max[j]) m = std::max(m, std::max(-min[j], max[j]));
        }
        return m;
    }

    /// The tile's per-column means and M2 (into mean_buf, m2_buf).
    void finish_moments() { shifted_moments(rows, shift, s1, s2, mean_buf, m2_buf); }

    /// Counts n values of delta into `hist` (the bins of `spec`).
    template <class T>
    void bin(const T* values, std::size_t n, const HistSpec& spec, HistCounts& hist) {
        index.resize(n);
        bin_values(n, values, index.data(), spec.low, spec.high, spec.scale, spec.bins);
        hist.add(index.data(), n);
    }

private:
    // Free-standing with restrict-qualified parameters, so that it vectorises across columns.
    template <class T>
    static std::int64_t row(std::size_t w, const T* __restrict v, const double* __restrict k,
                            double* __restrict a1, double* __restrict a2, double* __restrict lo,
                            double* __restrict hi) {
        constexpr double big = std::numeric_limits<double>::max();
        constexpr double inf = std::numeric_limits<double>::infinity();
        std::int64_t nf = 0;
        for (std::size_t j = 0; j < w; ++j) {
            const double x = static_cast<double>(v[j]);
            const double d = x - k[j];
            a1[j] += d;
            a2[j] += d * d;
            const bool finite = std::abs(x) <= big;
            const double x_lo = finite ? x : inf;
            const double x_hi = finite ? x : -inf;
            lo[j] = x_lo < lo[j] ? x_lo : lo[j];
            hi[j] = x_hi > hi[j] ? x_hi : hi[j];
            nf += finite ? 0 : 1;
        }
        return nf;
    }
};

/// Everything one layer's gradients accumulate over all tiles and chunks, in a fixed order.
struct GradLayerStats {
    UnitMoments moments;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::vector<std::int64_t> hist;
    std::int64_t below = 0, above = 0, nonfinite = 0;

    void reset(std::size_t width, int bins) {
        moments.reset(width);
        hist.assign(static_cast<std::size_t>(bins), 0);
    }

    void merge(GradTileStats& tile) {
        if (tile.rows == 0) return;
        tile.finish_moments();
        moments.merge(tile.rows, tile.mean_buf.data(), tile.m2_buf.data());
        merge_extrema(tile.min, tile.max, min, max);
        nonfinite += tile.nonfinite;
    }

    void merge(const HistCounts& counts) { counts.add_to(hist, below, above); }

    /// The accumulators as a run returns them (without the weight-gradient figures).
    GradResult result() && {
        GradResult r;
        r.unit_mean = std::move(moments.mean);
        r.unit_m2 = std::move(moments.m2);
        r.min = finite_or_nan(min);
        r.max = finite_or_nan(max);
        r.hist = std::move(hist);
        r.below = below;
        r.above = above;
        r.nonfinite = nonfinite;
        return r;
    }
};

/// Population std of n values, two passes in float64 (with their sum of squares in sq).
template <class T>
double two_pass_std(const T* values, std::size_t n, double* sum_sq = nullptr) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(values[i]);
    const double mean = sum / static_cast<double>(n);
    double m2 = 0.0, sq = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(values[i]);
        m2 += (v - mean) * (v - mean);
        sq += v * v;
    }
    if (sum_sq != nullptr) *sum_sq = sq;
    return std::sqrt(m2 / static_cast<double>(n));
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
