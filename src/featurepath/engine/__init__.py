"""The engine: per-row interventions and activation readers on decoder-block outputs, and
batched sampling / teacher-forced replay that drive them."""
