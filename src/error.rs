//! `ApiError`: every failure a client can see, mapped to its status and message in one place.

use crate::model::Invalid;

/// A client-visible failure. `message()` is the exact `{"error"}` text listed in docs/api.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    CannotParse,
    Invalid(Invalid),
    SomeFieldsEmpty,
    BadResetToken,
    NoSuchChat,
    AlreadyInChat,
    NotInChat,
    ChatExists,
    BadEventQueue,
    NotLoggedIn,
    WrongCredentials,
    EmailNotVerified,
    AdminOnly,
    RegistrationDisabled,
    GuestsDisabled,
    CrossOrigin,
    NotFound,
    /// Carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    AlreadyRegistered,
    AlreadyLoggedIn,
    NameRegistered,
    BodyTooLarge,
    /// The request body did not arrive within `body_read_timeout`.
    RequestTimeout,
    /// Carries the `Retry-After` seconds.
    TooManyRequests(u64),
    Internal,
    Unavailable,
    EmailNotConfigured,
    NoSuchMessage,
    /// A `getMessages` limit outside 1 to 200.
    InvalidLimit,
    /// Deleting a message that is neither the caller's nor deletable by an admin caller.
    NotAllowed,
    NoSuchGuest,
    /// A guest name an admin kicked, for `guest_block`.
    NameBlocked,
    /// An `event_types` entry that names no event type; carries the whole message.
    UnknownEventType(String),
}

impl ApiError {
    /// Whether the error may come from news this node has not read yet (several nodes): an
    /// unknown session, chat, membership, message or queue, or one another node just ended.
    pub fn may_be_news(&self) -> bool {
        matches!(
            self,
            ApiError::NotLoggedIn
                | ApiError::AlreadyLoggedIn
                | ApiError::AlreadyInChat
                | ApiError::ChatExists
                | ApiError::NoSuchChat
                | ApiError::NotInChat
                | ApiError::NoSuchMessage
                | ApiError::BadEventQueue
                | ApiError::NoSuchGuest
                | ApiError::AdminOnly
        )
    }

    /// The exact `{"error"}` text; the HTTP status is chosen in `api::status`.
    pub fn message(&self) -> &str {
        use ApiError::*;
        match self {
            CannotParse => "cannot parse data",
            Invalid(invalid) => invalid_message(*invalid),
            SomeFieldsEmpty => "some fields are empty",
            BadResetToken => "bad reset password token",
            NoSuchChat => "no such chat",
            AlreadyInChat => "user is already logged in chat",
            NotInChat => "user not logged in such chat",
            ChatExists => "chat already exists",
            BadEventQueue => "bad event queue id",
            NotLoggedIn => "user not logged in",
            WrongCredentials => "wrong username or password",
            EmailNotVerified => "email is not verified",
            AdminOnly => "admin only",
            RegistrationDisabled => "registration is disabled",
            GuestsDisabled => "guest login is disabled",
            CrossOrigin => "cross-origin request refused",
            NotFound => "not found",
            MethodNotAllowed(_) => "method not allowed",
            AlreadyRegistered => "user already registered",
            AlreadyLoggedIn => "user is already logged in",
            NameRegistered => "this name is registered, sign in with its password",
            BodyTooLarge => "request body too large",
            RequestTimeout => "request timed out",
            TooManyRequests(_) => "too many requests",
            Internal => "internal error",
            Unavailable => "service unavailable",
            EmailNotConfigured => "email is not configured",
            NoSuchMessage => "no such message",
            InvalidLimit => "invalid limit",
            NotAllowed => "not allowed",
            NoSuchGuest => "no such guest",
            NameBlocked => "this name is blocked",
            UnknownEventType(message) => message,
        }
    }
}

fn invalid_message(invalid: Invalid) -> &'static str {
    match invalid {
        Invalid::UsernameEmpty => "username is empty",
        Invalid::Username => "invalid username",
        Invalid::ChatName => "invalid chat name",
        Invalid::PasswordEmpty => "password is empty",
        Invalid::PasswordLength => "password must be 8 to 128 characters",
        Invalid::Email => "invalid email",
        Invalid::MessageEmpty => "message is empty",
        Invalid::MessageTooLong => "message is too long",
    }
}

impl ApiError {
    /// 400 `unknown event type: NAME`, the name cut to 64 characters.
    pub fn unknown_event_type(name: &str) -> ApiError {
        let shown: String = name.chars().take(64).collect();
        ApiError::UnknownEventType(format!("unknown event type: {shown}"))
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid)
    }
}
