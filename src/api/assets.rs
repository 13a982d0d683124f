//! The web client: files embedded at build time, or read from `static_dir` when it is set.

use super::Ctx;
use rust_embed::RustEmbed;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::path::Tail;
use warp::reply::Response;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// A file ready to serve.
struct Asset {
    body: Vec<u8>,
    mime: String,
    etag: String,
}

/// `GET /<file>` (and HEAD): the bundled client (`/` is `index.html`); unknown files fall through to 404.
pub fn filter(ctx: Arc<Ctx>) -> BoxedFilter<(Response,)> {
    let static_dir = ctx.config.static_dir.clone();
    // HEAD answers like GET; the server sends no body for it.
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(move |tail: Tail, if_none_match: Option<String>| {
            let static_dir = static_dir.clone();
            async move {
                let name = match tail.as_str() {
                    "" => "index.html".to_owned(),
                    other => urlencoding::decode(other)
                        .map_err(|_| warp::reject::not_found())?
                        .into_owned(),
                };
                let asset = match &static_dir {
                    Some(dir) => from_dir(dir, &name).await,
                    None => embedded(&name),
                }
                .ok_or_else(warp::reject::not_found)?;
                Ok::<_, warp::Rejection>(respond(asset, if_none_match.as_deref()))
            }
        })
        .boxed()
}

fn embedded(name: &str) -> Option<Asset> {
    let file = Assets::get(name)?;
    Some(Asset {
        mime: file.metadata.mimetype().to_owned(),
        etag: etag_of(&file.metadata.sha256_hash()),
        body: file.data.into_owned(),
    })
}

async fn from_dir(dir: &Path, name: &str) -> Option<Asset> {
    let path = safe_join(dir, name)?;
    let body = tokio::fs::read(&path).await.ok()?;
    Some(Asset {
        mime: mime_guess::from_path(&path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned(),
        etag: etag_of(&crate::auth::sha256(&body)),
        body,
    })
}

/// Joins a request path to a directory, refusing anything that could climb out of it.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(dir.join(relative))
}

fn etag_of(hash: &[u8; 32]) -> String {
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn respond(asset: Asset, if_none_match: Option<&str>) -> Response {
    let fresh = if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim() == asset.etag || t.trim() == "*")
    });
    let mut response = if fresh {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(asset.body.into())
    };
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(&with_charset(&asset.mime)) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidate every time: file names carry no version, the ETag makes it cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn with_charset(mime: &str) -> String {
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "text/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_static_dir() {
        let dir = Path::new("/srv/web");
        assert_eq!(
            safe_join(dir, "app.js"),
            Some(PathBuf::from("/srv/web/app.js"))
        );
        assert_eq!(safe_join(dir, "../etc/passwd"), None);
        assert_eq!(safe_join(dir, "/etc/passwd"), None);
    }
}
