//! fib (filled in by its issue)
