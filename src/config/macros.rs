//! `config_keys!`: everything that is per key, derived from one row per key in `keys`.

/// One config key as the table declares it.
pub(super) struct KeySpec {
    /// The dotted key, `mail.from`.
    pub(super) name: &'static str,
    /// Kept out of errors and summaries, and readable from a `*_FILE` variable.
    pub(super) secret: bool,
    /// The row's doc text, which is also the key's comment line in the sample `config.toml`.
    #[cfg(test)]
    pub(super) doc: &'static str,
}

/// Declares the config keys once. A row is
///
/// ```text
/// /// Doc line, the same as the key's comment line in config.toml.
/// #[serde(...)]                                    (optional, for the file's shape)
/// name: RawType [=> TypedType] = default, check [, secret];
/// ```
///
/// `RawType` is what the file holds (its default is `default`), `TypedType` what [`Config`](super::Config)
/// holds (the same when left out), and `check` a function `(dotted key, raw value) -> Result<typed value,
/// Invalid>` from `checks`. From the rows come the typed structs, the raw structs and their `Default`, the per-key
/// checks (`RawConfig::check`), the summary lines (secrets redacted) and `KEYS`. A section marked `: Default`
/// also gets `Default` for its typed struct, which needs its raw and typed types to be the same.
macro_rules! config_keys {
    // The typed field's type: the raw type unless a row names another.
    (@typed $raw:ty) => { $raw };
    (@typed $raw:ty => $typed:ty) => { $typed };
    // A row's trailing `secret` marks a secret; any other word there is a compile error.
    (@secret) => { false };
    (@secret secret) => { true };
    // A section marked `: Default` gets the raw defaults as its typed `Default`.
    (@default $Typed:ident $Raw:ident [$($field:ident)*]) => {};
    (@default $Typed:ident $Raw:ident [$($field:ident)*] Default) => {
        impl Default for $Typed {
            fn default() -> Self {
                let raw = $Raw::default();
                Self { $($field: raw.$field,)* }
            }
        }
    };
    (
        $(#[doc = $doc:literal])*
        pub struct $Config:ident from $RawConfig:ident {
            $(
                $(#[doc = $kdoc:literal])*
                $(#[serde($($kserde:tt)*)])*
                $key:ident: $kraw:ty $(=> $ktyped:ty)? = $kdefault:expr, $kcheck:expr $(, $ksecret:ident)?;
            )*
        }
        $(
            $(#[doc = $sdoc:literal])*
            [$sect:ident] pub struct $Typed:ident from $Raw:ident $(: $Default:ident)? {
                $(
                    $(#[doc = $fdoc:literal])*
                    $(#[serde($($fserde:tt)*)])*
                    $field:ident: $fraw:ty $(=> $ftyped:ty)? = $fdefault:expr, $fcheck:expr
                        $(, $fsecret:ident)?;
                )*
            }
        )*
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $Config {
            /// Development mode (`--dev`): log mailer by default, localhost CORS, fewer PBKDF2 rounds allowed.
            pub dev: bool,
            $($(#[doc = $kdoc])* pub $key: config_keys!(@typed $kraw $(=> $ktyped)?),)*
            $($(#[doc = $sdoc])* pub $sect: $Typed,)*
        }

        $(
            $(#[doc = $sdoc])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $Typed {
                $($(#[doc = $fdoc])* pub $field: config_keys!(@typed $fraw $(=> $ftyped)?),)*
            }
            config_keys!(@default $Typed $Raw [$($field)*] $($Default)?);
        )*

        /// The config file's shape, before any value is checked; missing keys take their defaults.
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub(super) struct $RawConfig {
            $($(#[serde($($kserde)*)])* pub(super) $key: $kraw,)*
            $(pub(super) $sect: $Raw,)*
        }

        impl Default for $RawConfig {
            fn default() -> Self {
                Self {
                    $($key: $kdefault,)*
                    $($sect: $Raw::default(),)*
                }
            }
        }

        impl $RawConfig {
            /// Checks each key on its own; the rules that tie keys together come after, in `validate`.
            pub(super) fn check(self, dev: bool) -> Result<$Config, $crate::config::key_errors::Invalid> {
                Ok($Config {
                    dev,
                    $($key: ($kcheck)(stringify!($key), self.$key)?,)*
                    $($sect: self.$sect.check()?,)*
                })
            }
        }

        $(
            #[doc = concat!("The `[", stringify!($sect), "]` table's shape, before any value is checked.")]
            #[derive(::serde::Serialize, ::serde::Deserialize)]
            #[serde(deny_unknown_fields, default)]
            pub(super) struct $Raw {
                $($(#[serde($($fserde)*)])* pub(super) $field: $fraw,)*
            }

            impl Default for $Raw {
                fn default() -> Self {
                    Self { $($field: $fdefault,)* }
                }
            }

            impl $Raw {
                fn check(self) -> Result<$Typed, $crate::config::key_errors::Invalid> {
                    Ok($Typed {
                        $($field: ($fcheck)(concat!(stringify!($sect), ".", stringify!($field)), self.$field)?,)*
                    })
                }
            }
        )*

        impl $Config {
            /// The dotted names of the keys whose values differ from `other`'s, in file order.
            pub fn changed_keys(&self, other: &Self) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(if self.$key != other.$key {
                    changed.push(stringify!($key));
                })*
                $($(if self.$sect.$field != other.$sect.$field {
                    changed.push(concat!(stringify!($sect), ".", stringify!($field)));
                })*)*
                changed
            }

            /// Each table's name (`""` for the top level) and its `key = value` pairs in file order, values as
            /// TOML text; unset keys and secrets are marked to be printed commented out.
            pub(super) fn summary_tables(
                &self,
            ) -> Vec<(&'static str, Vec<(&'static str, $crate::config::summary::Printed)>)> {
                use $crate::config::summary::shown;
                vec![
                    ("", vec![
                        $((stringify!($key), shown(config_keys!(@secret $($ksecret)?), &self.$key)),)*
                    ]),
                    $((stringify!($sect), vec![
                        $((
                            stringify!($field),
                            shown(config_keys!(@secret $($fsecret)?), &self.$sect.$field),
                        ),)*
                    ]),)*
                ]
            }
        }

        /// Every key, in file order.
        pub(super) const KEYS: &[$crate::config::macros::KeySpec] = &[
            $($crate::config::macros::KeySpec {
                name: stringify!($key),
                secret: config_keys!(@secret $($ksecret)?),
                #[cfg(test)]
                doc: concat!($($kdoc),*),
            },)*
            $($($crate::config::macros::KeySpec {
                name: concat!(stringify!($sect), ".", stringify!($field)),
                secret: config_keys!(@secret $($fsecret)?),
                #[cfg(test)]
                doc: concat!($($fdoc),*),
            },)*)*
        ];
    };
}

pub(super) use config_keys;
