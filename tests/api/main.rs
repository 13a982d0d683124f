//! Integration tests: a real server on 127.0.0.1:0 with a temp sled directory, driven over HTTP.

mod abuse;
mod accounts;
mod chats;
mod connections;
mod conventions;
mod crash;
mod events;
mod helpers;
mod hostile;
mod log_capture;
mod mail;
mod mail_recorder;
mod offline;
mod races;
mod restart;
mod security;
mod sessions;
