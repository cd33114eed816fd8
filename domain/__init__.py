"""The Task aggregate, its state machine and progress maths: pure, no I/O."""
