//! List requests: paging (`size`, numeric `offset`, absolute `next` URL) and filters
//! (`name` substring, `filter[labels.<key>]` exact, Dataplane `tag=<key>:<value>` substring on
//! one inbound, overview `status=online|offline`).

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::HOST;
use axum::http::request::Parts;
use kuma_core::{Resource, Spec};
use serde_json::{Value, json};

use super::ApiError;

/// Page size when `size` is absent.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest accepted `size`.
pub const MAX_PAGE_SIZE: usize = 1000;

/// What a list handler needs from the request: the URL (to build `next`) and the query.
#[derive(Debug, Clone)]
pub struct ListRequest {
    host: String,
    path: String,
    raw_query: Option<String>,
    /// Decoded `key=value` pairs, in order (keys may repeat).
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The original URI keeps the base path when the router is nested.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost")
            .to_string();
        let raw_query = uri.query().map(str::to_string);
        let pairs = raw_query.as_deref().map(parse_query).unwrap_or_default();
        Ok(Self {
            host,
            path: uri.path().to_string(),
            raw_query,
            pairs,
        })
    }
}

/// A window of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    pub offset: usize,
}

/// Which items a list keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    name: Option<String>,
    labels: Vec<(String, String)>,
    tags: Vec<(String, String)>,
}

impl ListRequest {
    /// The last value of `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `size` and `offset`, checked.
    pub fn page(&self) -> Result<Page, ApiError> {
        let size = match self.value("size") {
            None | Some("") => DEFAULT_PAGE_SIZE,
            Some(s) => match s.parse::<usize>() {
                Ok(0) | Err(_) => {
                    return Err(ApiError::bad_parameter(
                        "Invalid page size",
                        "size",
                        format!("must be a whole number between 1 and {MAX_PAGE_SIZE}, got {s:?}"),
                    ));
                }
                Ok(n) if n > MAX_PAGE_SIZE => {
                    return Err(ApiError::bad_parameter(
                        "Invalid page size",
                        "size",
                        format!("must be at most {MAX_PAGE_SIZE}, got {n}"),
                    ));
                }
                Ok(n) => n,
            },
        };
        let offset = match self.value("offset") {
            None | Some("") => 0,
            Some(s) => s.parse::<usize>().map_err(|_| {
                ApiError::bad_parameter(
                    "Invalid offset",
                    "offset",
                    format!("must be a whole number, got {s:?}"),
                )
            })?,
        };
        Ok(Page { size, offset })
    }

    /// The filters of the query. `tags` enables `tag=` (Dataplane lists only).
    pub fn filter(&self, tags: bool) -> Result<Filter, ApiError> {
        let mut f = Filter {
            name: self
                .value("name")
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            ..Filter::default()
        };
        for (k, v) in &self.pairs {
            if let Some(inner) = k.strip_prefix("filter[").and_then(|r| r.strip_suffix(']')) {
                match inner.strip_prefix("labels.") {
                    Some(label) if !label.is_empty() => {
                        f.labels.push((label.to_string(), v.clone()));
                    }
                    _ => {
                        return Err(ApiError::bad_parameter(
                            "Invalid filter",
                            k,
                            "unsupported filter: only filter[labels.<key>]=<value> is supported",
                        ));
                    }
                }
            } else if k == "tag" && tags {
                let (key, value) = v.split_once(':').unwrap_or((v.as_str(), ""));
                f.tags.push((key.to_string(), value.to_string()));
            }
        }
        Ok(f)
    }

    /// `{"total","items","next"}` for the page of `items`; `next` is this URL with `offset`
    /// moved on, or null on the last page.
    pub fn paginate(&self, items: Vec<Value>, page: Page) -> Value {
        let total = items.len();
        let end = page.offset.saturating_add(page.size);
        let next = (end < total).then(|| self.url_with_offset(end));
        let items: Vec<Value> = items
            .into_iter()
            .skip(page.offset)
            .take(page.size)
            .collect();
        json!({ "total": total, "items": items, "next": next })
    }

    fn url_with_offset(&self, offset: usize) -> String {
        let mut parts: Vec<String> = self
            .raw_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && decode(p.split('=').next().unwrap_or("")) != "offset")
            .map(str::to_string)
            .collect();
        parts.push(format!("offset={offset}"));
        format!("http://{}{}?{}", self.host, self.path, parts.join("&"))
    }
}

impl Filter {
    /// Whether `res` passes every filter.
    pub fn matches(&self, res: &Resource) -> bool {
        if let Some(n) = &self.name
            && !res.meta.name.contains(n.as_str())
        {
            return false;
        }
        if !self
            .labels
            .iter()
            .all(|(k, v)| res.meta.labels.get(k) == Some(v))
        {
            return false;
        }
        if self.tags.is_empty() {
            return true;
        }
        let Spec::Dataplane(dp) = &res.spec else {
            return true;
        };
        // Every tag filter must hold on one and the same inbound, as in Kuma.
        dp.inbounds().iter().any(|inb| {
            self.tags.iter().all(|(k, v)| {
                inb.tags
                    .get(k)
                    .is_some_and(|actual| actual.contains(v.as_str()))
            })
        })
    }
}

/// Splits and decodes an `application/x-www-form-urlencoded` query.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding with `+` as space; invalid escapes are kept as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> ListRequest {
        ListRequest {
            host: "cp:5681".into(),
            path: "/meshes".into(),
            raw_query: Some(q.into()),
            pairs: parse_query(q),
        }
    }

    #[test]
    fn decodes_queries() {
        assert_eq!(
            decode("filter%5Blabels.kuma.io%2Fzone%5D"),
            "filter[labels.kuma.io/zone]"
        );
        assert_eq!(decode("a+b%2"), "a b%2");
        assert_eq!(decode("%zz%41"), "%zzA");
    }

    #[test]
    fn paging() {
        assert_eq!(
            req("").page().unwrap(),
            Page {
                size: 100,
                offset: 0
            }
        );
        assert_eq!(
            req("size=2&offset=4").page().unwrap(),
            Page { size: 2, offset: 4 }
        );
        for bad in ["size=0", "size=1001", "size=x", "size=-1"] {
            assert_eq!(req(bad).page().unwrap_err().invalid[0].field, "size");
        }
        assert_eq!(
            req("offset=a").page().unwrap_err().invalid[0].field,
            "offset"
        );
        let r = req("size=2&offset=0&name=x");
        let v = r.paginate((0..5).map(|i| json!(i)).collect(), r.page().unwrap());
        assert_eq!(v["total"], 5);
        assert_eq!(v["items"], json!([0, 1]));
        assert_eq!(v["next"], "http://cp:5681/meshes?size=2&name=x&offset=2");
        let r = req("size=2&offset=4");
        let v = r.paginate((0..5).map(|i| json!(i)).collect(), r.page().unwrap());
        assert_eq!(v["items"], json!([4]));
        assert!(v["next"].is_null());
    }

    #[test]
    fn filters() {
        assert!(req("filter[spec.x]=1").filter(false).is_err());
        let f = req("filter%5Blabels.app%5D=web&tag=kuma.io/service:back&name=dp")
            .filter(true)
            .unwrap();
        assert_eq!(f.labels, [("app".to_string(), "web".to_string())]);
        assert_eq!(
            f.tags,
            [("kuma.io/service".to_string(), "back".to_string())]
        );
        assert_eq!(f.name.as_deref(), Some("dp"));
    }
}
