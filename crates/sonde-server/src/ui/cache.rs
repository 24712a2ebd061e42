//! Rendered pages, kept a few seconds: a page that several people watch live, or that
//! refreshes itself, is computed once per interval rather than once per viewer and update.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::{PageFilters, Rendered};
use crate::AppState;

/// Most pages kept; past it the oldest go.
const MAX_ENTRIES: usize = 256;

struct Entry {
    at: Instant,
    version: u64,
    page: Arc<Rendered>,
}

/// Rendered pages by path, filters and window end.
#[derive(Default)]
pub struct PageCache {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Answer a page request: the sign-in redirect without a session, else the page of `path`
/// for `f` (kept or rendered, see [`cached`]) as the filters ask for it.
pub(super) async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    f: &PageFilters,
    ttl_secs: u64,
    render: impl Future<Output = Rendered>,
) -> Response {
    if let Err(r) = super::signed_in(state, headers, path) {
        return r.into_response();
    }
    let page = cached(state, headers, path, f, ttl_secs, render).await;
    super::respond(&page, f)
}

/// The page of `path` for `f`: the kept one if it was rendered over the same window end and
/// either no data arrived since or it is younger than `ttl_secs`; else `render`'s, kept. A
/// request with `Cache-Control: no-cache` (a browser's hard reload) is always rendered.
async fn cached(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    f: &PageFilters,
    ttl_secs: u64,
    render: impl Future<Output = Rendered>,
) -> Arc<Rendered> {
    let (_, _, to, _) = f.window();
    let key = format!("{path}?{}&to={to}", f.query());
    let version = super::data_version(state);
    let ttl = Duration::from_secs(ttl_secs);
    let revalidate = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("no-cache"));
    if !revalidate
        && let Some(e) = state.pages.entries.lock().get(&key)
        && (e.version == version || e.at.elapsed() < ttl)
    {
        return e.page.clone();
    }
    let page = Arc::new(render.await);
    let mut entries = state.pages.entries.lock();
    if entries.len() >= MAX_ENTRIES {
        entries.retain(|_, e| e.at.elapsed() < ttl);
        if entries.len() >= MAX_ENTRIES
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
    }
    entries.insert(
        key,
        Entry {
            at: Instant::now(),
            version,
            page: page.clone(),
        },
    );
    page
}
