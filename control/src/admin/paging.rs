//! Pages of the describe verbs' lists (`--max-results`, `--next-token`), as the AWS API gives
//! them: at most MaxResults items, and a NextToken while more follow.
//!
//! A token names its list and the last item given, by the item's key rather than its place.
//! A list that changes between two pages (a connection ends, a route is added) therefore
//! neither repeats nor skips an item listed on both sides of the change. The token is the
//! hex of that text: opaque to scripts, as AWS's are, and nothing a caller could not list.

use super::cli::Listing;
use super::verbs::Response;
use super::AdminError;

/// How a list is ordered, which says where the page a token asks for starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Sorted here by key (connections: in the order established). The page starts at the
    /// first item after the token's key, whether or not the token's item is still listed.
    ByKey,
    /// As configured (endpoints, target networks, rules, routes: the order they were made
    /// in). The page starts after the token's item, which must still be listed.
    AsListed,
}

/// One page of a list, and the token for the next when more follow.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// The NextToken: `None` on the last page.
    pub next_token: Option<String>,
}

/// The page of `items` (the whole list `list` names, e.g. `routes`, already filtered) that
/// `paging` asks for: from the start or after its token, at most `--max-results` of them (all
/// that follow without it). `key` names an item uniquely within the list.
///
/// # Errors
/// `InvalidPaginationToken` for a token this list did not give, or (`Order::AsListed`) one
/// whose item is no longer listed.
pub fn page<T>(
    mut items: Vec<T>,
    list: &str,
    order: Order,
    key: impl Fn(&T) -> String,
    paging: &Listing,
) -> Result<Page<T>, AdminError> {
    if order == Order::ByKey {
        items.sort_by_cached_key(&key);
    }
    let start = match paging.next_token.as_deref() {
        None => 0,
        Some(token) => {
            let after = decode(token, list).ok_or_else(|| {
                invalid_token("it is not a NextToken this verb gave; ask again without it")
            })?;
            match order {
                Order::ByKey => items.partition_point(|i| key(i) <= after),
                Order::AsListed => items
                    .iter()
                    .position(|i| key(i) == after)
                    .map(|p| p + 1)
                    .ok_or_else(|| {
                        invalid_token(
                            "the item it goes on after is no longer listed; ask again without it",
                        )
                    })?,
            }
        }
    };
    let max = paging.max_results.map_or(usize::MAX, usize::from);
    let end = start.saturating_add(max).min(items.len());
    let next_token = match (end < items.len(), end.checked_sub(1)) {
        (true, Some(last)) if last >= start => items.get(last).map(|i| encode(list, &key(i))),
        _ => None,
    };
    items.truncate(end);
    items.drain(..start.min(end));
    Ok(Page { items, next_token })
}

/// Adds the page's NextToken to a describe verb's answer: a `NextToken` member of its JSON,
/// and a last line of its table and text.
pub fn with_next_token(mut response: Response, next_token: Option<String>) -> Response {
    if let Some(token) = next_token {
        let line = format!("NextToken: {token}\n");
        response.table.push_str(&line);
        response.text.push_str(&line);
        if let Some(object) = response.json.as_object_mut() {
            object.insert("NextToken".to_owned(), serde_json::Value::String(token));
        }
    }
    response
}

fn invalid_token(why: &str) -> AdminError {
    AdminError::request("InvalidPaginationToken", format!("--next-token: {why}"))
}

fn encode(list: &str, key: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2 * (list.len() + 1 + key.len()));
    for b in list.bytes().chain([b'\n']).chain(key.bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The key a token of `list` goes on after; `None` for anything else.
fn decode(token: &str, list: &str) -> Option<String> {
    let hex = token.as_bytes();
    // Hex digits only: `from_str_radix` would also take a sign (`+a`).
    if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let bytes = hex
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (of, key) = text.split_once('\n')?;
    (of == list).then(|| key.to_owned())
}

/// The values at `pointers` in `item` (as the filters read them, `json_field`), one line
/// each: the key of a configured item whose identity is several fields (an authorization
/// rule: endpoint, destination, group).
pub fn key_of(item: &serde_json::Value, pointers: &[&str]) -> String {
    pointers
        .iter()
        .map(|p| super::filters::json_field(item, p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(max: Option<u16>, token: Option<&str>) -> Listing {
        Listing {
            max_results: max,
            next_token: token.map(str::to_owned),
            ..Listing::default()
        }
    }

    /// A page of the list "n" of `items`, keyed by their decimal text.
    fn of(
        items: Vec<u32>,
        order: Order,
        max: Option<u16>,
        token: Option<&str>,
    ) -> Result<Page<u32>, AdminError> {
        page(items, "n", order, |i| i.to_string(), &paging(max, token))
    }

    fn pages(items: &[u32], order: Order, max: u16) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let p = page(
                items.to_vec(),
                "numbers",
                order,
                |i| format!("{i:05}"),
                &paging(Some(max), token.as_deref()),
            )
            .unwrap();
            out.push(p.items);
            match p.next_token {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    #[test]
    fn a_list_comes_in_pages_of_at_most_max_results_the_last_without_a_token() {
        let items: Vec<u32> = (0..12).collect();
        assert_eq!(
            pages(&items, Order::AsListed, 5),
            [vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![10, 11]]
        );
        // A list that ends with a page: no token, no empty page after it.
        assert_eq!(pages(&items[..10], Order::ByKey, 5).len(), 2);
        let all = page(
            items.clone(),
            "numbers",
            Order::AsListed,
            |i| i.to_string(),
            &Listing::default(),
        );
        assert_eq!(
            all.unwrap(),
            Page {
                items,
                next_token: None
            }
        );
        let none = page(
            Vec::<u32>::new(),
            "numbers",
            Order::ByKey,
            |i| i.to_string(),
            &paging(Some(5), None),
        );
        assert_eq!(
            none.unwrap(),
            Page {
                items: vec![],
                next_token: None
            }
        );
    }

    #[test]
    fn by_key_a_list_is_sorted_and_goes_on_after_a_token_whose_item_is_gone() {
        let first = of(vec![9, 3, 7, 1, 5, 8, 2], Order::ByKey, Some(5), None).unwrap();
        assert_eq!(first.items, [1, 2, 3, 5, 7]);
        let token = first.next_token.unwrap();
        // 7 ended and 6 and 10 came (keys as text: "10" sorts first), between the two pages.
        let next = of(
            vec![9, 3, 1, 6, 5, 8, 2, 10],
            Order::ByKey,
            Some(5),
            Some(&token),
        )
        .unwrap();
        assert_eq!(
            next,
            Page {
                items: vec![8, 9],
                next_token: None
            }
        );
    }

    #[test]
    fn as_listed_a_token_whose_item_is_gone_is_refused() {
        let first = of(vec![4, 2, 9, 7, 5, 1], Order::AsListed, Some(5), None).unwrap();
        assert_eq!(first.items, [4, 2, 9, 7, 5]);
        let token = first.next_token.unwrap();
        let next = of(
            vec![4, 2, 9, 7, 5, 1, 3],
            Order::AsListed,
            None,
            Some(&token),
        )
        .unwrap();
        assert_eq!(next.items, [1, 3]);
        let gone = of(vec![4, 2, 9, 7, 1], Order::AsListed, None, Some(&token));
        assert!(matches!(
            gone,
            Err(AdminError::Request {
                code: "InvalidPaginationToken",
                ..
            })
        ));
    }

    #[test]
    fn a_token_of_another_list_or_no_token_at_all_is_refused() {
        let routes = page(
            vec![1, 2, 3, 4, 5, 6],
            "routes",
            Order::AsListed,
            |i| i.to_string(),
            &paging(Some(5), None),
        )
        .unwrap();
        let token = routes.next_token.unwrap();
        for bad in [
            token.as_str(),
            "",
            "zz",
            "0",
            "ff0a31",
            &token[..token.len() - 1],
        ] {
            let r = page(
                vec![1, 2, 3, 4, 5, 6],
                "rules",
                Order::AsListed,
                |i| i.to_string(),
                &paging(Some(5), Some(bad)),
            );
            assert!(
                matches!(
                    r,
                    Err(AdminError::Request {
                        code: "InvalidPaginationToken",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    /// Only the hex digits it was written with: `+a` is not another spelling of `0a`.
    #[test]
    fn a_token_is_read_as_hex_digits_only() {
        let first = of(vec![1, 2, 3, 4, 5, 6], Order::AsListed, Some(5), None).unwrap();
        let token = first.next_token.unwrap();
        assert!(token.contains("0a"), "{token}");
        let signed = token.replacen("0a", "+a", 1);
        let r = of(
            vec![1, 2, 3, 4, 5, 6],
            Order::AsListed,
            Some(5),
            Some(&signed),
        );
        assert!(
            matches!(
                r,
                Err(AdminError::Request {
                    code: "InvalidPaginationToken",
                    ..
                })
            ),
            "{r:?}"
        );
        let upper = of(
            vec![1, 2, 3, 4, 5, 6],
            Order::AsListed,
            Some(5),
            Some(&token.to_uppercase()),
        );
        assert_eq!(upper.unwrap().items, [6], "upper case is the same hex");
    }

    #[test]
    fn the_token_is_added_to_the_json_and_the_table() {
        let r = Response {
            json: serde_json::json!({ "Routes": [] }),
            table: "Routes (0)\n".to_owned(),
            text: String::new(),
        };
        let r = with_next_token(r, Some("6e0a31".to_owned()));
        assert_eq!(r.json["NextToken"], "6e0a31");
        assert!(r.table.ends_with("NextToken: 6e0a31\n"));
        let r = with_next_token(r, None);
        assert_eq!(r.json.as_object().map(|o| o.len()), Some(2));
    }
}
