//! End-to-end tests against a local kube-apiserver + etcd (see `support`).

mod harness;
mod support;
