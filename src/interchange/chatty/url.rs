//! Where `natter import-chatty` finds chatty-server's database URL: the argument (visible in
//! `ps` and shell history), `CHATTY_DATABASE_URL`, `CHATTY_DATABASE_URL_FILE`, or standard input.

use std::io::{BufRead, IsTerminal};

/// The variables read when no URL is given on the command line.
pub const VAR: &str = "CHATTY_DATABASE_URL";
pub const FILE_VAR: &str = "CHATTY_DATABASE_URL_FILE";

/// The URL from the argument (`-` reads standard input), else the variables, else standard
/// input (without echo on a terminal). The error never repeats a URL.
pub fn resolve(argument: Option<&str>) -> Result<String, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = match argument {
        Some("-") => read_stdin()?,
        Some(url) => url.to_owned(),
        None => match (env(VAR), env(FILE_VAR)) {
            (Some(_), Some(_)) => {
                return Err(format!("both {VAR} and {FILE_VAR} are set; set only one"));
            }
            (Some(url), None) => url,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {FILE_VAR} {path}: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => read_stdin()?,
        },
    };
    if url.trim().is_empty() {
        return Err(format!(
            "no database URL: give chatty-server's DATABASE_URL as the argument, in {VAR} or \
             {FILE_VAR}, or on standard input"
        ));
    }
    Ok(url)
}

/// One line from standard input; a terminal is prompted without echo.
fn read_stdin() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("chatty-server's DATABASE_URL: ")
            .map_err(|e| format!("cannot read the database URL: {e}"));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the database URL from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
