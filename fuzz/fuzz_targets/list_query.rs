//! `GET /v1/sandboxes`'s query: any query string, split into pairs as the server does
//! (`form_urlencoded`, repeated keys kept), through `ListQuery::parse`, then the selection and
//! pagination built from it. Accepted queries must say what the pairs said.
#![no_main]

use berth_api::list_query::{ListQuery, MAX_PAGE_SIZE};
use berth_core::model::SandboxState;
use berth_core::runtime::ListedPage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Ok(query) = ListQuery::parse(&pairs) else {
        return;
    };

    // The last `page` / `pageSize` wins; without one, the defaults.
    let last = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.parse::<u32>().expect("an accepted number"))
    };
    assert_eq!(query.page, last("page").unwrap_or(1));
    assert_eq!(query.page_size, last("pageSize").unwrap_or(20));
    assert!(query.page >= 1);
    assert!((1..=MAX_PAGE_SIZE).contains(&query.page_size));

    // Every state asked for, once each, in the order first asked.
    let mut states: Vec<SandboxState> = Vec::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "state") {
        let state = SandboxState::parse_case_insensitive(value).expect("an accepted state");
        if !states.contains(&state) {
            states.push(state);
        }
    }
    assert_eq!(query.states, states);
    assert!(query.metadata.iter().all(|(k, _)| !k.is_empty()));
    assert!(
        pairs
            .iter()
            .all(|(k, _)| matches!(k.as_str(), "state" | "metadata" | "page" | "pageSize"))
    );

    let selection = query.selection();
    let offset = u64::from(query.page - 1) * u64::from(query.page_size);
    assert_eq!(selection.offset as u64, offset);
    assert_eq!(selection.limit, query.page_size as usize);
    assert_eq!(selection.states, query.states);
    assert_eq!(selection.metadata, query.metadata);

    for total in [0, 1, offset as usize, offset as usize + 1, usize::MAX] {
        let response = query.response(ListedPage {
            items: Vec::new(),
            total,
        });
        let p = response.pagination;
        assert_eq!(p.total_items, total as u64);
        // Just enough pages for every item (in u128: the product may pass u64::MAX).
        let capacity = |pages: u64| u128::from(pages) * u128::from(p.page_size);
        assert!(capacity(p.total_pages) >= u128::from(p.total_items));
        assert!(p.total_pages == 0 || capacity(p.total_pages - 1) < u128::from(p.total_items));
        assert_eq!(p.has_next_page, u64::from(p.page) < p.total_pages);
    }
});
