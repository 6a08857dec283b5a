//! The command line (`ds-server --help`) and the logging settings read from the environment.
//! Everything else is configuration ([`crate::config`]): files and `DS_*` variables.

use std::path::PathBuf;

use clap::Parser;

/// What `--help` ends with: where the settings come from.
const AFTER_HELP: &str = "\
Settings come from built-in defaults, then ./ds-server.toml if present, then each --config
FILE in order, then DS_SECTION__KEY environment variables (DS_SERVER__PORT=8080 sets
[server] port = 8080). Unknown keys and invalid values are errors.

Logging: DS_LOG (or RUST_LOG) filters, e.g. DS_LOG=info,ds_engine=debug;
DS_LOG_FORMAT=json writes JSON lines instead of text; DS_HTTP__ACCESS_LOG=true logs every
request (target `access`). README.md lists every setting.";

/// A Durable Streams server: URL-addressed, append-only byte streams over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "ds-server", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read settings from FILE (TOML), after ./ds-server.toml; repeatable, later files win.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,

    /// Check the configuration, print the effective settings (secrets redacted) and exit:
    /// 0 if it is valid, 2 if not.
    #[arg(long)]
    pub check_config: bool,
}

/// How log lines are written (`DS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default), coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The format `DS_LOG_FORMAT` names: unset or empty is text.
    ///
    /// # Errors
    /// A value other than `text` or `json`, named in the message.
    pub fn from_env(value: Option<&str>) -> Result<LogFormat, String> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("DS_LOG_FORMAT `{other}` is not one of text, json")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ds-server").chain(args.iter().copied()))
    }

    #[test]
    fn config_files_repeat_in_order() {
        let cli = parse(&["--config", "a.toml", "-c", "b.toml", "--check-config"]).unwrap();
        assert_eq!(cli.config, vec![PathBuf::from("a.toml"), PathBuf::from("b.toml")]);
        assert!(cli.check_config);
        assert_eq!(parse(&[]).unwrap(), Cli { config: Vec::new(), check_config: false });
    }

    #[test]
    fn mistakes_on_the_command_line_are_usage_errors() {
        for bad in [&["--bogus"][..], &["--config"], &["serve"]] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        for asked in ["--help", "-h", "--version", "-V"] {
            assert_eq!(parse(&[asked]).unwrap_err().exit_code(), 0, "{asked}");
        }
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(LogFormat::from_env(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_env(Some("json")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_env(Some(" text ")), Ok(LogFormat::Text));
        assert!(LogFormat::from_env(Some("yaml")).unwrap_err().contains("yaml"));
    }
}
