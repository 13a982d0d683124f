//! Every `ApiError`'s HTTP status, in one place: the domain names failures, the API maps them.

use crate::error::ApiError;
use warp::http::StatusCode;

/// The status an error is answered with.
pub fn status(err: &ApiError) -> StatusCode {
    use ApiError::*;
    match err {
        Invalid(crate::model::Invalid::PasswordEmpty) => StatusCode::UNPROCESSABLE_ENTITY,
        CannotParse | Invalid(_) | SomeFieldsEmpty | BadResetToken | NoSuchChat | AlreadyInChat
        | NotInChat | ChatExists | BadEventQueue | NoSuchMessage | InvalidLimit | NoSuchGuest
        | UnknownEventType(_) => StatusCode::BAD_REQUEST,
        NotLoggedIn | WrongCredentials => StatusCode::UNAUTHORIZED,
        EmailNotVerified | AdminOnly | RegistrationDisabled | GuestsDisabled | CrossOrigin
        | NotAllowed | NameBlocked => StatusCode::FORBIDDEN,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Invalid;

    #[test]
    fn password_empty_is_422_and_other_validation_is_400() {
        assert_eq!(
            status(&ApiError::Invalid(Invalid::PasswordEmpty)).as_u16(),
            422
        );
        assert_eq!(status(&ApiError::Invalid(Invalid::Username)).as_u16(), 400);
        assert_eq!(
            ApiError::Invalid(Invalid::Username).message(),
            "invalid username"
        );
    }

    #[test]
    fn a_stalled_body_is_408_request_timed_out() {
        assert_eq!(status(&ApiError::RequestTimeout).as_u16(), 408);
        assert_eq!(ApiError::RequestTimeout.message(), "request timed out");
    }
}
