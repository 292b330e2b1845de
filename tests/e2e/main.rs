//! End-to-end tests against a local kube-apiserver + etcd (see `support`): the CRDs installed,
//! the operator running as a process, the sandbox provider in the test process.

mod browser;
mod chart;
mod cli;
mod crds;
mod dashboard;
mod demo;
mod examples;
mod fakes;
mod fixtures;
mod groups;
mod harness;
mod health;
mod hostile;
mod notify;
mod operations;
mod presets;
mod providers;
mod rbac;
mod reauth;
mod refresh;
mod support;
mod trust;
