//! Tests of the directory machine.
