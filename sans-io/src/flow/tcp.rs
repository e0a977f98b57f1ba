//! TCP translation: guest connections to host sockets and back, without buffering.
//! PLACEHOLDER: being written.
