//! `GET /v1/sandboxes`: its query (repeatable, case-insensitive `state`, OR-ed; `metadata` as
//! the spec encodes it — a URL-encoded `k=v&k2=v2` string — AND-ed; `page` ≥ 1; `pageSize`
//! 1..=200) and the page it selects, newest first.

use berth_core::ErrorCode;
use berth_core::model::SandboxState;
use berth_core::runtime::{ListSelection, ListedPage};
use berth_core::wire;

use crate::error::ApiError;

/// Largest page.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Largest page number: the spec's integers are 32-bit signed.
pub const MAX_PAGE: u32 = i32::MAX as u32;

/// A parsed list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Wanted states (any of them); empty means all.
    pub states: Vec<SandboxState>,
    /// Required metadata pairs (all of them).
    pub metadata: Vec<(String, String)>,
    /// Page number, from 1.
    pub page: u32,
    /// Items per page.
    pub page_size: u32,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::GeneralInvalidQuery, message)
}

impl ListQuery {
    /// Parses the query pairs; every problem names the parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut query = Self {
            states: Vec::new(),
            metadata: Vec::new(),
            page: 1,
            page_size: 20,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "state" => {
                    let state = SandboxState::parse_case_insensitive(value).ok_or_else(|| {
                        let known: Vec<&str> =
                            SandboxState::ALL.iter().map(|s| s.as_str()).collect();
                        invalid(format!(
                            "state: {value:?} is not a state; use one of {}",
                            known.join(", ")
                        ))
                    })?;
                    if !query.states.contains(&state) {
                        query.states.push(state);
                    }
                }
                "metadata" => {
                    for part in value.split('&').filter(|p| !p.is_empty()) {
                        let Some((k, v)) = part.split_once('=') else {
                            return Err(invalid(format!(
                                "metadata: {part:?} is not key=value; encode the filter as k=v&k2=v2"
                            )));
                        };
                        let decode = |s: &str| {
                            form_urlencoded::parse(format!("x={s}").as_bytes())
                                .next()
                                .map(|(_, v)| v.into_owned())
                                .unwrap_or_default()
                        };
                        let (k, v) = (decode(k), decode(v));
                        if k.is_empty() {
                            return Err(invalid(format!("metadata: {part:?} has an empty key")));
                        }
                        query.metadata.push((k, v));
                    }
                }
                "page" => {
                    query.page = value
                        .parse()
                        .ok()
                        .filter(|p| (1..=MAX_PAGE).contains(p))
                        .ok_or_else(|| {
                            invalid(format!(
                                "page: {value:?} is not a whole number from 1 to {MAX_PAGE}"
                            ))
                        })?;
                }
                "pageSize" => {
                    query.page_size = value
                        .parse()
                        .ok()
                        .filter(|p| (1..=MAX_PAGE_SIZE).contains(p))
                        .ok_or_else(|| invalid(format!("pageSize: {value:?} is not a whole number from 1 to {MAX_PAGE_SIZE}")))?;
                }
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter {other:?}; use state, metadata, page, pageSize"
                    )));
                }
            }
        }
        Ok(query)
    }

    /// What to ask the runtime for.
    pub fn selection(&self) -> ListSelection {
        ListSelection {
            states: self.states.clone(),
            metadata: self.metadata.clone(),
            offset: usize::try_from(u64::from(self.page - 1) * u64::from(self.page_size))
                .unwrap_or(usize::MAX),
            limit: self.page_size as usize,
        }
    }

    /// The response for a page the runtime returned.
    pub fn response(&self, page: ListedPage) -> wire::ListSandboxesResponse {
        let total = page.total as u64;
        let total_pages = total.div_ceil(u64::from(self.page_size));
        wire::ListSandboxesResponse {
            items: page.items.into_iter().map(wire::Sandbox::from).collect(),
            pagination: wire::PaginationInfo {
                page: self.page,
                page_size: self.page_size,
                total_items: total,
                total_pages,
                has_next_page: u64::from(self.page) < total_pages,
            },
        }
    }
}
