"""Coalescing invalidation: the pure logic behind `processors/invalidation.py`.

Modules, one job each (none does I/O, so all of it is testable without a broker):
- `affected`: which users a changed item concerns (taste vectors against the item vectors);
- `reverse_index`: item -> users whose precomputed candidates hold it;
- `coalescer`: a coalescing window, a value-ordered queue and a model-promotion sweep;
- `pacing`: the token bucket that bounds the refresh rate;
- `engine`: the decisions of the processor, event batch in, effects and commands out.
"""
