//! Tests of the fake API's export side.
