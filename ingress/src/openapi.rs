use crate::routes::{accounts, admin, catalog, payments, schedules};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketing platform API", description = "Accounts, catalog, waiting room, seats and payments."),
    paths(
        accounts::sign_up, accounts::login, accounts::refresh, accounts::logout, accounts::me,
        catalog::create_stage, catalog::create_concert, catalog::create_schedule,
        catalog::list_concerts, catalog::get_concert, catalog::seat_map,
        schedules::join_queue, schedules::my_queue_status, schedules::my_queue_events,
        schedules::leave_queue, schedules::hold_seats, schedules::my_bookings,
        schedules::release_booking,
        payments::pay, payments::get_payment, payments::cancel_payment,
        admin::list_payments, admin::list_refunds, admin::stream,
        admin::list_request_logs, admin::stream_request_logs,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "accounts"), (name = "catalog"), (name = "waiting room"), (name = "seats"), (name = "payments"), (name = "admin"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

/// `GET /api-docs/openapi.json`: generated from the handlers' annotations.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
