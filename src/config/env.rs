//! Where configuration comes from: the environment, injected ([`EnvSource`]) so tests pass
//! values instead of mutating the process environment, and [`ConfigErrors`], every problem of
//! one binary's configuration reported together.

use std::fmt;

/// Where variables are read from.
pub trait EnvSource {
    /// The value of `name`, if set (empty values count as unset).
    fn get(&self, name: &str) -> Option<String>;

    /// Like [`EnvSource::get`], but a value that is not UTF-8 is an error naming the variable
    /// (rather than taken as unset).
    fn var(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.get(name))
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    fn var(&self, name: &str) -> Result<Option<String>, String> {
        match std::env::var(name) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8")),
        }
    }
}

impl EnvSource for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        EnvSource::get(self.as_slice(), name)
    }
}

/// Everything that was wrong with one binary's configuration, in one error: each line names the
/// flag or variable it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Whose configuration (a binary's name).
    pub of: &'static str,
    /// One message per problem, in the order found.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "{one}"),
            many => write!(
                f,
                "invalid {} configuration:\n  - {}",
                self.of,
                many.join("\n  - ")
            ),
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while a configuration is read; [`Problems::finish`] turns them into the
/// result.
#[derive(Debug)]
pub struct Problems {
    of: &'static str,
    errors: Vec<String>,
}

impl Problems {
    /// No problems yet, in the configuration of `of`.
    pub fn new(of: &'static str) -> Self {
        Self {
            of,
            errors: Vec::new(),
        }
    }

    /// Records `r`'s error, if any, and gives its value back.
    pub fn take<T>(&mut self, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// `flag` when given, else the variable `name` (an unreadable one is a problem).
    pub fn flag_or_env(
        &mut self,
        flag: Option<String>,
        env: &dyn EnvSource,
        name: &str,
    ) -> Option<String> {
        match flag {
            Some(v) => Some(v),
            None => self.take(env.var(name)).flatten(),
        }
    }

    /// Records a problem.
    pub fn push(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }

    /// `value` when nothing was wrong; every problem otherwise. `value` is only built when
    /// there were none, so it may unwrap what [`Problems::take`] returned.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ConfigErrors> {
        if self.errors.is_empty()
            && let Some(v) = value()
        {
            return Ok(v);
        }
        let mut errors = self.errors;
        if errors.is_empty() {
            errors.push("incomplete configuration".into());
        }
        Err(ConfigErrors {
            of: self.of,
            errors,
        })
    }
}
