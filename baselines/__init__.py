"""Classical methods and the sliding-window CNN: one file per method, named after it."""
