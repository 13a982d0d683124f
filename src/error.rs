//! `ApiError`: every failure a client can see, mapped to its status and message in one place.

use crate::model::Invalid;
use crate::store::StoreError;
use warp::http::StatusCode;

/// A client-visible failure. `message()` is the exact `{"error"}` text from SPEC.
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
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Invalid(crate::model::Invalid::PasswordEmpty) => StatusCode::UNPROCESSABLE_ENTITY,
            CannotParse | Invalid(_) | SomeFieldsEmpty | BadResetToken | NoSuchChat
            | AlreadyInChat | NotInChat | ChatExists | BadEventQueue => StatusCode::BAD_REQUEST,
            NotLoggedIn | WrongCredentials => StatusCode::UNAUTHORIZED,
            EmailNotVerified | AdminOnly | RegistrationDisabled | GuestsDisabled | CrossOrigin => {
                StatusCode::FORBIDDEN
            }
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AlreadyRegistered | AlreadyLoggedIn | NameRegistered => StatusCode::CONFLICT,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable | EmailNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn message(&self) -> &'static str {
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

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // Storage details stay in the log; the client learns only that we are unavailable.
        log::error!("{err}");
        ApiError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_empty_is_422_and_other_validation_is_400() {
        assert_eq!(
            ApiError::Invalid(Invalid::PasswordEmpty).status().as_u16(),
            422
        );
        assert_eq!(ApiError::Invalid(Invalid::Username).status().as_u16(), 400);
        assert_eq!(
            ApiError::Invalid(Invalid::Username).message(),
            "invalid username"
        );
    }

    #[test]
    fn a_stalled_body_is_408_request_timed_out() {
        assert_eq!(ApiError::RequestTimeout.status().as_u16(), 408);
        assert_eq!(ApiError::RequestTimeout.message(), "request timed out");
    }
}
