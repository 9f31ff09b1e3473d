//! llama.cpp's command-line programs run on one prompt each, their timings read from what they
//! print: the anchor the examples compare with (`scripts/vs_llamacpp.sh` builds the programs).

use std::path::Path;
use std::process::Command;

/// Tokens generated and the seconds they took (prompt processing included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timed {
    pub tokens: f64,
    pub secs: f64,
}

impl Timed {
    pub fn add(&mut self, o: Timed) {
        self.tokens += o.tokens;
        self.secs += o.secs;
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens / self.secs.max(1e-9)
    }
}

/// Runs llama.cpp's `bin` on one prompt with the shared flags (model, threads, new tokens,
/// greedy, context) and `extra`, returning its stdout (the text) and stderr (the timings).
fn llama_run(
    dir: &Path,
    bin: &str,
    gguf: &Path,
    threads: usize,
    max_new: usize,
    extra: &[&str],
    text: &str,
) -> msn::Result<(String, String)> {
    // The programs link llama.cpp's shared libraries, which the build leaves beside them.
    let libs = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) => {
            let mut v = dir.as_os_str().to_owned();
            v.push(":");
            v.push(old);
            v
        }
        None => dir.as_os_str().to_owned(),
    };
    run(Command::new(dir.join(bin))
        .env("LD_LIBRARY_PATH", libs)
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-n", &max_new.to_string()])
        .args(["--temp", "0", "-c", "4096"])
        .args(off_amx(false))
        .args(extra)
        .args(["-p", text]))
}

/// The flags that keep llama.cpp's weights out of its AMX buffer on a CPU with AMX-INT8 (for
/// `llama-bench` when `bench`, else for the programs that take llama.cpp's common flags):
/// nothing elsewhere. In the pinned llama.cpp, `ggml_backend_amx_mul_mat` segfaults on the first
/// product of several rows (a prompt) on the Sapphire Rapids VMs here, as reported upstream
/// (llama.cpp issue #20824, open); with weight repacking off llama.cpp runs its AVX-512 kernels.
pub fn off_amx(bench: bool) -> &'static [&'static str] {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let amx = *AMX.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|s| s.split_whitespace().any(|w| w == "amx_int8"))
    });
    match (amx, bench) {
        (false, _) => &[],
        (true, true) => &["--repack", "0"],
        (true, false) => &["-nr"],
    }
}

/// Runs a command, returning its stdout and stderr; a failure is an error that names the
/// command.
pub fn run(cmd: &mut Command) -> msn::Result<(String, String)> {
    let out = cmd
        .output()
        .map_err(|e| msn::Error::InvalidArgument(format!("{cmd:?}: {e}")))?;
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        let tail: String = se.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(msn::Error::InvalidArgument(format!(
            "{cmd:?} failed: {tail}"
        )));
    }
    Ok((so, se))
}

/// `(runs, seconds)` of llama.cpp's `... <what> = X ms / N runs` (or `tokens`) perf line.
fn perf_line(stderr: &str, what: &str) -> Option<(f64, f64)> {
    let line = stderr.lines().find(|l| {
        l.contains(&format!(" {what} =")) && !(what == "eval time" && l.contains("prompt eval"))
    })?;
    let after = line.split('=').nth(1)?;
    let mut words = after.split_whitespace();
    let ms: f64 = words.next()?.parse().ok()?;
    let n: f64 = words.nth(2)?.parse().ok()?;
    Some((n, ms / 1000.0))
}

/// `llama-completion` greedy on one prompt: its text, and the tokens generated over prompt
/// processing plus generation time.
pub fn completion(
    dir: &Path,
    gguf: &Path,
    threads: usize,
    max_new: usize,
    text: &str,
) -> msn::Result<(String, Timed)> {
    let (so, se) = llama_run(
        dir,
        "llama-completion",
        gguf,
        threads,
        max_new,
        &["--no-warmup", "-no-cnv", "--no-display-prompt"],
        text,
    )?;
    let (n, s) = perf_line(&se, "eval time").ok_or_else(|| {
        msn::Error::InvalidArgument("llama-completion printed no `eval time` line".into())
    })?;
    let (_, ps) = perf_line(&se, "prompt eval time").unwrap_or((0.0, 0.0));
    // The first token comes from the prompt's pass: generated = eval runs + 1.
    let timed = Timed {
        tokens: n + 1.0,
        secs: s + ps,
    };
    Ok((so, timed))
}

/// `llama-lookup` (llama.cpp's n-gram lookup decoding, up to 8 drafted tokens) on one prompt:
/// decoded tokens over encode + decode time. With `cache`, its dynamic n-gram cache is read
/// from that file (when it exists) and written back with this prompt's n-grams merged in, so a
/// sequence of calls carries it from prompt to prompt as `-lcd` does for a user.
pub fn lookup(
    dir: &Path,
    gguf: &Path,
    threads: usize,
    max_new: usize,
    text: &str,
    cache: Option<&Path>,
) -> msn::Result<Timed> {
    let mut extra = vec!["--spec-draft-n-max", "8"];
    let cache_arg = cache.map(|c| c.display().to_string());
    if let Some(c) = &cache_arg {
        extra.extend(["-lcd", c.as_str()]);
    }
    let (_, se) = llama_run(dir, "llama-lookup", gguf, threads, max_new, &extra, text)?;
    let field = |what: &str| -> Option<(f64, f64)> {
        let line = se.lines().find(|l| l.contains(what))?;
        let mut w = line.split(what).nth(1)?.split_whitespace();
        let n: f64 = w.next()?.parse().ok()?;
        let s: f64 = w.nth(2)?.parse().ok()?;
        Some((n, s))
    };
    let missing = || msn::Error::InvalidArgument("llama-lookup printed no speed lines".into());
    let (n, ds) = field(" decoded ").ok_or_else(missing)?;
    let (_, es) = field(" encoded ").ok_or_else(missing)?;
    Ok(Timed {
        tokens: n,
        secs: ds + es,
    })
}
