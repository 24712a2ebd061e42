//! Rendered pages, kept a few seconds: a page that several people watch live, or that
//! refreshes itself, is computed once per interval rather than once per viewer and update.
//! Requests for a page being rendered wait for that render (single flight): ten people
//! opening a week-long view at once cost one render, not ten.

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
    /// When its render began (its data is as of then).
    at: Instant,
    version: u64,
    page: Arc<Rendered>,
}

/// Rendered pages by path, filters and window end.
#[derive(Default)]
pub struct PageCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// One gate per page being rendered: who holds it renders, the others wait.
    rendering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PageCache {
    /// The gate of `key`, shared by the requests for it while any holds it.
    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.rendering
            .lock()
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Drops `key`'s gate once no other request holds a handle to it.
    fn release(&self, key: &str, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut rendering = self.rendering.lock();
        // Held by the map and by `gate`: nobody else is waiting.
        if Arc::strong_count(&gate) <= 2 {
            rendering.remove(key);
        }
    }
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
    // After signing in, back to this view with its filters.
    let query = f.query();
    let here = if query == PageFilters::default().query() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    if let Err(r) = super::signed_in(state, headers, &here) {
        return r.into_response();
    }
    let page = cached(state, headers, path, f, ttl_secs, render).await;
    super::respond(&page, f)
}

/// The page of `path` for `f`: the kept one if it was rendered over the same window end and
/// either no data arrived since or it is younger than `ttl_secs`; else `render`'s, kept. A
/// request with `Cache-Control: no-cache` (a browser's hard reload) gets a page whose render
/// began after it arrived. Concurrent requests for one page share one render.
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
    let arrived = Instant::now();
    // A kept page serves unless the viewer asked for a fresh one; then only a render that
    // began after the request arrived will do.
    let usable = |e: &Entry| {
        if revalidate {
            e.at >= arrived
        } else {
            e.version == version || e.at.elapsed() < ttl
        }
    };
    let kept = |state: &AppState| {
        state
            .pages
            .entries
            .lock()
            .get(&key)
            .filter(|e| usable(e))
            .map(|e| e.page.clone())
    };
    if !revalidate && let Some(page) = kept(state) {
        return page;
    }
    let gate = state.pages.gate(&key);
    let page = {
        let _turn = gate.lock().await;
        // Rendered by the request this one waited for?
        match kept(state) {
            Some(page) => page,
            None => {
                let started = Instant::now();
                let page = Arc::new(render.await);
                keep(state, key.clone(), started, version, page.clone(), ttl);
                page
            }
        }
    };
    state.pages.release(&key, gate);
    page
}

/// Keeps a page whose render began at `started`, making room past [`MAX_ENTRIES`].
fn keep(
    state: &AppState,
    key: String,
    started: Instant,
    version: u64,
    page: Arc<Rendered>,
    ttl: Duration,
) {
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
            at: started,
            version,
            page,
        },
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn page() -> Rendered {
        Rendered {
            title: "t",
            path: "/t",
            filters: maud::html! {},
            body: maud::html! {},
            charts: Vec::new(),
            live_every_secs: 60,
        }
    }

    /// Viewers opening a page being rendered wait for that render instead of starting their
    /// own; a hard reload afterwards renders again.
    #[tokio::test]
    async fn concurrent_requests_for_a_page_share_one_render() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::ensure_project(dir.path()).expect("init");
        let state = crate::open(crate::ServerConfig::new(dir.path())).expect("open");
        let renders = AtomicUsize::new(0);
        let render = || async {
            renders.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            page()
        };
        let (f, plain) = (PageFilters::default(), HeaderMap::new());
        let pages = futures::future::join_all(
            (0..5).map(|_| cached(&state, &plain, "/t", &f, 60, render())),
        )
        .await;
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert!(pages.iter().all(|p| Arc::ptr_eq(p, &pages[0])));
        assert!(state.pages.rendering.lock().is_empty(), "gates released");
        let mut reload = HeaderMap::new();
        reload.insert(header::CACHE_CONTROL, "no-cache".parse().expect("header"));
        let again = cached(&state, &reload, "/t", &f, 60, render()).await;
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        assert!(!Arc::ptr_eq(&again, &pages[0]));
    }
}
