//! The `sluice` binary: argument parsing and wiring only.
//!
//! `sluice run` starts the daemon. Every other verb goes to the running daemon through its admin
//! socket (so it is applied live), and works on the file directly only when no daemon is there
//! (no socket, or nobody listening on it). A request the daemon took but did not answer is an
//! error: it is never done again on the file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use sluice_control::admin::{self, audit::Caller, cli::Cli, cli::Verb, AdminError};
use sluice_control::config;
use sluice_control::runtime::admin_socket::{self, CallError, Request, Response};
use sluice_control::runtime::{Daemon, RunError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.verb {
        Verb::Run => return run(&cli),
        Verb::Top(a) => return top(&cli, a.interval, a.once),
        Verb::Validate | Verb::HashPassword => return offline(&cli),
        _ => {}
    }
    let socket = config::admin_socket_of(&cli.config);
    let request = Request {
        args: forwarded_args(),
        config: Some(absolute_config(&cli.config)),
        // Relative paths on the command line are resolved against it, live as offline.
        cwd: std::env::current_dir().ok(),
    };
    let answer = admin_socket::call(&socket, &request);
    if matches!(cli.verb, Verb::Reload) {
        return reload(&cli, &socket, answer);
    }
    match answer {
        // The daemon there runs on another file: this one is not served, so the verb works on
        // it directly.
        Ok(answer) if answer.not_its_file => offline(&cli),
        Ok(answer) => {
            print!("{}", answer.stdout);
            eprint!("{}", answer.stderr);
            ExitCode::from(u8::try_from(answer.exit).unwrap_or(1))
        }
        // Nothing was sent: no daemon is there, so the verb works on the file.
        Err(CallError::NoDaemon(_)) => offline(&cli),
        Err(e @ CallError::NoAnswer(_)) => no_answer(&socket, &e),
        Err(e) => {
            eprintln!("error: admin socket {}: {e}", socket.display());
            ExitCode::from(1)
        }
    }
}

/// The daemon took the request but did not answer: doing it again on the file could do it
/// twice.
fn no_answer(socket: &Path, e: &CallError) -> ExitCode {
    eprintln!(
        "error: the daemon did not answer; the change may or may not be in force \
         (admin socket {}: {e}); look with a describe verb before trying again",
        socket.display()
    );
    ExitCode::from(1)
}

/// `sluice reload`: the daemon's answer (it records the reload in the audit trail); or, when
/// no daemon took the request (none there, one that runs on another file, a socket that could
/// not be reached), a refusal, on record in the file's audit trail with the local user, as the
/// daemon records the reloads it refuses.
fn reload(cli: &Cli, socket: &Path, answer: Result<Response, CallError>) -> ExitCode {
    let why = match answer {
        Ok(answer) if !answer.not_its_file => {
            print!("{}", answer.stdout);
            eprint!("{}", answer.stderr);
            return ExitCode::from(u8::try_from(answer.exit).unwrap_or(1));
        }
        // Its file is not this one: nothing to reload.
        Ok(answer) => answer.stderr.trim_end().to_owned(),
        Err(CallError::NoDaemon(_)) => format!(
            "no sluice daemon answers on {}; start one with `sluice run`",
            socket.display()
        ),
        // The daemon took it, and records it.
        Err(e @ CallError::NoAnswer(_)) => return no_answer(socket, &e),
        Err(e) => format!("error: admin socket {}: {e}", socket.display()),
    };
    let _ = admin::execute_with(cli, &Caller::local(), std::time::SystemTime::now(), |_| {
        Err(AdminError::request("ReloadRefused", why.clone()))
    });
    eprintln!("{why}");
    ExitCode::from(1)
}

/// `--config` as the daemon compares it with its own file: canonical where it exists, else
/// absolute (the daemon then finds it is not its file).
fn absolute_config(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The command line after `sluice`, without `--config` (sent apart, in `Request::config`).
fn forwarded_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            args.next();
        } else if !a.starts_with("--config=") {
            out.push(a);
        }
    }
    out
}

fn offline(cli: &Cli) -> ExitCode {
    match admin::execute(cli, &Caller::local(), std::time::SystemTime::now()) {
        Ok(response) => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (a pipe to `head`) is not an error worth reporting.
            let _ = out.write_all(response.render(cli.output).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn run(cli: &Cli) -> ExitCode {
    match Daemon::start(&cli.config).and_then(Daemon::run) {
        Ok(()) => ExitCode::SUCCESS,
        // Asked to: a clean end, nothing of the start left.
        Err(e @ RunError::Stopped(_)) => {
            sluice_control::runtime::log(&e.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice run: {e}");
            ExitCode::from(2)
        }
    }
}

/// `sluice top`: samples the daemon through its admin socket and redraws in place.
#[allow(clippy::disallowed_methods)] // a terminal shell: it reads the clock and sleeps
fn top(cli: &Cli, interval: f64, once: bool) -> ExitCode {
    use sluice_control::admin::top::{render, Sample};
    let socket = config::admin_socket_of(&cli.config);
    let ask = |verb: &str| -> Result<serde_json::Value, String> {
        let a = admin_socket::call(&socket, &Request::own_file(vec![verb.to_owned()]))
            .map_err(|e| format!("no sluice daemon answers on {}: {e}", socket.display()))?;
        if a.exit != 0 {
            return Err(a.stderr.trim().to_owned());
        }
        serde_json::from_str(&a.stdout).map_err(|e| format!("{verb}: {e}"))
    };
    let origin = std::time::Instant::now();
    let interval = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    let mut prev: Option<Sample> = None;
    loop {
        let sample = match (
            ask("describe-client-vpn-connections"),
            ask("describe-data-plane"),
        ) {
            (Ok(connections), Ok(data_plane)) => Sample {
                at: origin.elapsed().as_secs_f64(),
                connections,
                data_plane,
            },
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("sluice top: {e}");
                return ExitCode::from(1);
            }
        };
        let clock = sluice_control::timefmt::rfc3339(std::time::SystemTime::now());
        let frame = render(prev.as_ref(), &sample, &clock);
        if once {
            if prev.is_some() {
                print!("{frame}");
                return ExitCode::SUCCESS;
            }
        } else {
            // Home and clear, then the frame: the view refreshes in place.
            print!("\x1b[H\x1b[2J{frame}");
            let _ = std::io::stdout().flush();
        }
        prev = Some(sample);
        std::thread::sleep(interval);
    }
}
