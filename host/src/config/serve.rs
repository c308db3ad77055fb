//! The one generic step that reads every setting: defaults, the file, then
//! environment variables and flags, with every default shown by `--help`.
//!
//! The settings structs derive clap's `Args` with flags that have no clap
//! default, so clap's `update_from_arg_matches` changes exactly the fields
//! given by flag or environment, over whatever the file said. Defaults are
//! stated once, in the `Default` impls; `--help` reads them from there.

use super::Config;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

const CONFIG_ARG: &str = "config";

/// `hubhost serve`'s arguments: `--config FILE` and every setting.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub config: Config,
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut config = match matches.get_one::<PathBuf>(CONFIG_ARG) {
            Some(path) => Config::from_file(path).map_err(|error| {
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{error:#}\n"))
            })?,
            None => Config::default(),
        };
        config.update_from_arg_matches(matches)?;
        Ok(Self { config })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.config.update_from_arg_matches(matches)
    }
}

impl Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let command = command.arg(
            Arg::new(CONFIG_ARG)
                .long("config")
                .env("HUBHOST_CONFIG")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file; environment variables and flags override it"),
        );
        show_defaults(Config::augment_args(command))
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// Append `[default: …]` to every flag's help, from `Config::default()`.
/// A flag's id is its field's name; its file key is the same, or the same
/// with `_ms` for a duration.
fn show_defaults(command: Command) -> Command {
    let mut defaults = HashMap::new();
    if let Ok(value) = serde_json::to_value(Config::default()) {
        leaves(&value, &mut defaults);
    }
    command.mut_args(|arg| {
        let id = arg.get_id().as_str();
        let (default, millis) = match defaults.get(id) {
            Some(default) => (Some(default), false),
            None => (defaults.get(&format!("{id}_ms")), true),
        };
        let arg = if millis && default.is_some() {
            arg.value_name("MS")
        } else {
            arg
        };
        match (default, arg.get_help()) {
            (Some(default), Some(help)) => {
                let help = format!("{help} [default: {default}]");
                arg.help(help)
            }
            _ => arg,
        }
    })
}

/// Every scalar of `value`, by its key; empty and null values are no
/// defaults worth showing.
fn leaves(value: &Value, out: &mut HashMap<String, String>) {
    let Value::Object(fields) = value else {
        return;
    };
    for (key, value) in fields {
        match value {
            Value::Object(_) => leaves(value, out),
            Value::Null => {}
            Value::Array(items) if items.is_empty() => {}
            Value::String(text) => {
                out.insert(key.clone(), text.clone());
            }
            other => {
                out.insert(key.clone(), other.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        use clap::CommandFactory as _;
        let matches = Cli::command().try_get_matches_from(args)?;
        Ok(ServeArgs::from_arg_matches(&matches)?.config)
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("hubhost-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("hubhost.toml");
        std::fs::write(
            &file,
            "cluster_prefix = \"from-file\"\n[connection]\nkeep_alive_interval_ms = 1000\nclient_timeout_ms = 4000\n",
        )?;
        let path = file.to_string_lossy().into_owned();
        let config = parse(&["hubhost", "--config", &path, "--keep-alive-ms", "2000"])?;
        assert_eq!(config.cluster_prefix, "from-file", "file over default");
        assert_eq!(
            config.connection.keep_alive_interval,
            Duration::from_secs(2),
            "flag over file"
        );
        assert_eq!(
            config.connection.client_timeout,
            Duration::from_secs(4),
            "file kept"
        );
        assert_eq!(
            config.connection.poll_timeout,
            Duration::from_secs(90),
            "default kept"
        );
        let config = parse(&["hubhost", "--hub", "a/b=x.wasm", "--hub", "c/d=y.wasm"])?;
        assert_eq!(config.hubs.len(), 2);
        assert!(parse(&["hubhost", "--keep-alive-ms", "0"]).is_err());
        assert!(parse(&["hubhost", "--hub", "Bad/b=x.wasm"]).is_err());
        assert!(parse(&["hubhost", "--config", "/no/such/file.toml"]).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn help_shows_the_defaults_from_the_code() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        for expected in [
            "[default: 127.0.0.1:5000]",
            "[default: hubhost]",
            "[default: 15000]",
            "[default: 90000]",
            "[default: 32768]",
            "[default: 5000]",
            "[default: 67108864]",
        ] {
            assert!(help.contains(expected), "{expected} missing from:\n{help}");
        }
    }
}
