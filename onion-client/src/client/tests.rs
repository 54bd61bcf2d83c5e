//! Unit tests of the client machine.
