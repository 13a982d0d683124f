//! Takes a parameter that tokio-postgres does not read (`sslrootcert`) out of a connection
//! string, in either of libpq's forms: a `postgres://` URL or `key=value` pairs.

/// A connection string that is neither form. It never repeats the string (it may hold a
/// password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the PostgreSQL connection string does not parse")]
pub struct Unparsable;

/// The string without `key`, and `key`'s value if it was there.
pub fn take(conninfo: &str, key: &str) -> Result<(String, Option<String>), Unparsable> {
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        return Ok(take_from_url(conninfo, key));
    }
    take_from_pairs(conninfo, key)
}

fn take_from_url(url: &str, key: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut found = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == key {
                found =
                    Some(urlencoding::decode(v).map_or_else(|_| v.to_owned(), |d| d.into_owned()));
                false
            } else {
                true
            }
        })
        .collect();
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, found)
}

/// `key = value` pairs; a value may be single-quoted with `\` escapes.
fn take_from_pairs(text: &str, key: &str) -> Result<(String, Option<String>), Unparsable> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut rest = String::new();
    let mut found = None;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if chars.get(i) != Some(&'=') {
            return Err(Unparsable);
        }
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if chars.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(Unparsable),
                    Some('\'') => break,
                    Some('\\') => {
                        value.push(*chars.get(i + 1).ok_or(Unparsable)?);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                value.push(chars[i]);
                i += 1;
            }
        }
        if name == key {
            found = Some(value);
        } else {
            let pair: String = chars[start..i].iter().collect();
            rest.push_str(&pair);
            rest.push(' ');
        }
    }
    Ok((rest.trim_end().to_owned(), found))
}

#[cfg(test)]
mod tests {
    use super::take;

    #[test]
    fn sslrootcert_comes_out_of_either_form() {
        assert_eq!(
            take(
                "postgres://u:p@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem",
                "sslrootcert"
            ),
            Ok((
                "postgres://u:p@h/db?sslmode=require".into(),
                Some("/etc/ca.pem".into())
            ))
        );
        assert_eq!(
            take("postgres://h/db?sslrootcert=/ca.pem", "sslrootcert"),
            Ok(("postgres://h/db".into(), Some("/ca.pem".into())))
        );
        assert_eq!(
            take("postgres://h/db", "sslrootcert"),
            Ok(("postgres://h/db".into(), None))
        );
        assert_eq!(
            take(
                "host=h password='a b\\'c' sslrootcert = '/my ca.pem' dbname=x",
                "sslrootcert"
            ),
            Ok((
                "host=h password='a b\\'c' dbname=x".into(),
                Some("/my ca.pem".into())
            ))
        );
        assert!(take("host=h password='open", "sslrootcert").is_err());
        assert!(take("host", "sslrootcert").is_err());
    }
}
