// The reference math's dot product: a plain loop in index order (the reference is read, not tuned).
#pragma once

namespace gpt::ref {

template <class S>
inline S dot(const S* a, const S* b, int n) {
    S s = 0;
    for (int c = 0; c < n; ++c) s += a[c] * b[c];
    return s;
}

}  // namespace gpt::ref
