//! Gives a request's URI and header values memory of their own.
//!
//! hyper parses them as slices of the connection's 8 KiB read buffer. While the request is in
//! flight (a parked poll for minutes) those slices keep that buffer alive, so hyper's next read
//! (it watches for the client hanging up) allocates a second 8 KiB buffer. Copied into one small
//! block, the head frees the read buffer for reuse.

use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;
use warp::http::uri::Uri;
use warp::http::{HeaderValue, Request};

/// Replaces `request`'s URI and header values by copies in one fresh allocation.
pub fn own_head<B>(request: &mut Request<B>) {
    let uri = request.uri();
    // Origin-form (`/path?query`) is what clients send; other forms are rare enough to print.
    let origin_form = uri.scheme().is_none() && uri.authority().is_none();
    let target = match (origin_form, uri.path_and_query()) {
        (true, Some(pq)) => Cow::Borrowed(pq.as_str()),
        _ => Cow::Owned(uri.to_string()),
    };
    let values: usize = request.headers().values().map(HeaderValue::len).sum();
    let mut block = BytesMut::with_capacity(target.len() + values);
    block.put_slice(target.as_bytes());
    for value in request.headers().values() {
        block.put_slice(value.as_bytes());
    }
    let target_len = target.len();
    let mut block: Bytes = block.freeze();
    if let Ok(uri) = Uri::from_maybe_shared(block.split_to(target_len)) {
        *request.uri_mut() = uri;
    }
    for value in request.headers_mut().values_mut() {
        let copy = block.split_to(value.len());
        // The bytes were a valid value a moment ago; the check cannot fail.
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(copy) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::header;

    fn request(uri: &str) -> Request<()> {
        let mut req = Request::builder()
            .uri(uri)
            .header(header::HOST, "chat.example.com")
            .header(header::COOKIE, "a=1")
            .header(header::COOKIE, "b=2")
            .header("x-custom", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())
            .body(())
            .unwrap();
        req.headers_mut()
            .get_mut(header::HOST)
            .unwrap()
            .set_sensitive(true);
        req
    }

    #[test]
    fn the_copy_equals_the_original() {
        for uri in [
            "/api/loggedonly/events?queue_id=q&last_event_id=5",
            "/",
            "http://chat.example.com:8080/api/x?y=1",
            "*",
        ] {
            let mut req = request(uri);
            let before = (req.uri().clone(), req.headers().clone());
            own_head(&mut req);
            assert_eq!(req.uri(), &before.0, "{uri}");
            assert_eq!(req.headers(), &before.1, "{uri}");
            assert!(req.headers()[header::HOST].is_sensitive());
            let cookies: Vec<_> = req.headers().get_all(header::COOKIE).iter().collect();
            assert_eq!(cookies, ["a=1", "b=2"]);
        }
    }

    #[test]
    fn nothing_points_into_the_original_buffer() {
        let original = Bytes::from_static(b"/path?q=1host.example");
        let mut req = Request::builder()
            .uri(Uri::from_maybe_shared(original.slice(..9)).unwrap())
            .header(
                header::HOST,
                HeaderValue::from_maybe_shared(original.slice(9..)).unwrap(),
            )
            .body(())
            .unwrap();
        own_head(&mut req);
        let range = original.as_ptr_range();
        let inside = |p: *const u8| range.contains(&p);
        assert!(!inside(req.uri().path().as_ptr()));
        assert!(!inside(req.headers()[header::HOST].as_bytes().as_ptr()));
    }
}
