//! `/api/adminonly/*`: chat management and the online backup, for verified admins (the route
//! table checks who calls).

use super::{ApiRequest, Ctx, http};
use crate::chat::SessionInfo;
use crate::error::ApiError;
use crate::model::Chat;
use bytes::Bytes;
use serde::Deserialize;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use warp::Reply;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

/// Bytes the export writer gathers before handing a chunk to the response.
const EXPORT_CHUNK: usize = 64 * 1024;
/// Chunks in flight between the writer and a slow client: the writer waits beyond this.
const EXPORT_CHUNKS_QUEUED: usize = 4;

/// POST /api/adminonly/createChat
pub async fn create_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: Chat = http::parse_json(&req.body)?;
    ctx.service.create_chat(session, &body.chat).await?;
    Ok(http::empty())
}

/// POST /api/adminonly/removeChat
pub async fn remove_chat(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: Chat = http::parse_json(&req.body)?;
    ctx.service.remove_chat(session, &body.chat).await?;
    Ok(http::empty())
}

/// `{"user"}`; a missing field reads as an empty name.
#[derive(Deserialize, Default)]
#[serde(default)]
struct KickBody {
    user: String,
}

/// POST /api/adminonly/kick
pub async fn kick(
    ctx: &Ctx,
    req: &ApiRequest,
    session: &SessionInfo,
) -> Result<Response, ApiError> {
    let body: KickBody = http::parse_json(&req.body)?;
    ctx.service.kick(session, &body.user).await?;
    Ok(http::empty())
}

/// GET /api/adminonly/export: the JSON Lines backup, streamed from a consistent cut (docs/operations.md,
/// Backup and restore). The dump is written on a blocking thread into a bounded channel, so a
/// large export neither holds the state lock nor ties up an async worker, and a slow client
/// only slows its own export. A failure midway aborts the response: the dump then lacks its end
/// marker, which `natter import` refuses.
pub async fn export(ctx: &Ctx) -> Result<Response, ApiError> {
    let export = ctx.service.export().await?;
    let (chunks, receiver) = mpsc::channel(EXPORT_CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buf: Vec::with_capacity(EXPORT_CHUNK),
            chunks,
        };
        match export.write_to(&mut out) {
            Ok(counts) => log::info!(
                "export: {} users, {} chats, {} messages",
                counts.users,
                counts.chats,
                counts.messages
            ),
            Err(e) => {
                log::warn!("export stopped: {e}");
                let _ = out.chunks.blocking_send(Err(e));
            }
        }
    });
    let mut response = warp::reply::stream(Chunks(receiver)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let disposition = format!(
        "attachment; filename=\"natter-export-{}.jsonl\"",
        crate::model::now()
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Collects the dump into chunks and sends each through the channel, waiting while it is full.
struct ChunkWriter {
    buf: Vec<u8>,
    chunks: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.chunks
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The receiving end as the response body.
struct Chunks(mpsc::Receiver<io::Result<Bytes>>);

impl futures_util::Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
