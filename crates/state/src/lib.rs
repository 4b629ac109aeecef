//! State layout (being written).
