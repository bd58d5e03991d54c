//! Page parameters, the `{items, total, page, size, pages}` envelope of every list, and
//! the search pattern lists share.

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

pub const MAX_PAGE_SIZE: i64 = 100;
/// Deeper pages cost a scan of every row before them; filters reach further more cheaply.
pub const MAX_PAGE: i64 = 10_000;
const DEFAULT_PAGE_SIZE: i64 = 20;

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: i64,
    pub size: i64,
}

impl PageRequest {
    pub fn offset(self) -> i64 {
        (self.page - 1) * self.size
    }
}

/// Checks `page` (1 to 10,000, default 1) and `size` (1 to 100, default 20) from a query string.
pub fn page_request(page: Option<i64>, size: Option<i64>) -> Result<PageRequest, ApiError> {
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(DEFAULT_PAGE_SIZE);
    let mut errors = Vec::new();
    if !(1..=MAX_PAGE).contains(&page) {
        errors.push(crate::error::FieldError::new(
            "page",
            "must be from 1 to 10000",
        ));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        errors.push(crate::error::FieldError::new(
            "size",
            "must be from 1 to 100",
        ));
    }
    if errors.is_empty() {
        Ok(PageRequest { page, size })
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// One page of a list, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub size: i64,
    pub pages: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, request: PageRequest) -> Self {
        Self {
            items,
            total,
            page: request.page,
            size: request.size,
            pages: (total + request.size - 1) / request.size,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            page: self.page,
            size: self.size,
            pages: self.pages,
        }
    }
}

/// An `ILIKE` pattern matching `text` anywhere, with its own `%`, `_` and `\` taken literally.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::{contains_pattern, page_request};
    use crate::error::ApiError;

    #[test]
    fn pages_out_of_range_name_the_field_instead_of_overflowing() {
        for (page, size, field) in [
            (Some(i64::MAX), None, "page"),
            (Some(0), None, "page"),
            (None, Some(101), "size"),
            (None, Some(-1), "size"),
        ] {
            match page_request(page, size) {
                Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, field),
                other => panic!("{page:?}/{size:?}: {other:?}"),
            }
        }
        let last = page_request(Some(10_000), Some(100)).expect("in range");
        assert_eq!(last.offset(), 999_900);
    }

    #[test]
    fn wildcards_in_the_search_text_are_literal() {
        assert_eq!(contains_pattern("ab"), "%ab%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
