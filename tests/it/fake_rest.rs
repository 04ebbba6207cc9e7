//! Tests of the fake API's list-style endpoints.
