//! kdeploy AWS provider (in progress).
