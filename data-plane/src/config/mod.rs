//! Config stream client. (in progress)
