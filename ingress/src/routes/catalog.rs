//! Stages, concerts and schedules.
//!
//! Writes publish the creation event first (the log is the source of truth and
//! feeds the schedule processor), then write the row through to the catalog
//! store so the creator reads its own write at once; the catalog sink applies the
//! same event again, idempotently, which repairs a failed write-through.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::{meta, new_id};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use ticketing_domain::catalog::{
    Concert, NewConcert, NewSchedule, NewStage, Schedule, SeatStatus, Stage,
};
use ticketing_domain::events::{ConcertCreated, Event, ScheduleCreated, StageCreated};
use ticketing_domain::ids::{ConcertId, ScheduleId, StageId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
pub struct CreateStageRequest {
    pub name: String,
    pub location: String,
    /// 1 to 500.
    pub rows: i64,
    /// 1 to 500; at most 100,000 seats in all.
    pub cols: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CreateStageResponse {
    pub stage_id: Uuid,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateConcertRequest {
    pub stage_id: Uuid,
    pub concert_name: String,
    /// Minutes.
    pub runtime: i64,
    #[schema(value_type = String, format = Date)]
    pub start_date: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub end_date: NaiveDate,
    /// Whole currency units per seat.
    pub price: i64,
    pub concert_image: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateConcertResponse {
    pub concert_id: Uuid,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateScheduleRequest {
    #[schema(value_type = String, format = Date)]
    pub concert_date: NaiveDate,
    /// `HH:MM` or `HH:MM:SS`.
    #[schema(value_type = String, example = "19:30")]
    pub concert_time: String,
    /// RFC 3339; absent means on sale at once.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sale_opens_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateScheduleResponse {
    pub schedule_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct StageView {
    pub stage_id: Uuid,
    pub name: String,
    pub location: String,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    pub schedule_id: Uuid,
    pub concert_id: Uuid,
    #[schema(value_type = String, format = Date)]
    pub concert_date: NaiveDate,
    #[schema(value_type = String, example = "19:30:00")]
    pub concert_time: NaiveTime,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sale_opens_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConcertView {
    pub concert_id: Uuid,
    pub seller_id: Uuid,
    pub stage_id: Uuid,
    pub concert_name: String,
    pub runtime: u32,
    #[schema(value_type = String, format = Date)]
    pub start_date: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub end_date: NaiveDate,
    pub price: i64,
    pub concert_image: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ConcertDetail {
    #[serde(flatten)]
    pub concert: ConcertView,
    pub stage: Option<StageView>,
    pub schedules: Vec<ScheduleView>,
}

#[derive(Serialize, ToSchema)]
pub struct ConcertPage {
    pub items: Vec<ConcertView>,
    /// 0-based.
    pub page: u32,
    pub size: u32,
    pub total: u64,
}

#[derive(Deserialize, IntoParams)]
pub struct PageQuery {
    /// 0-based page number (default 0).
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    pub size: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SeatView {
    pub row: u16,
    pub col: u16,
    #[schema(value_type = String, example = "AVAILABLE")]
    pub status: SeatStatus,
}

#[derive(Serialize, ToSchema)]
pub struct SeatMap {
    pub rows: u16,
    pub cols: u16,
    pub seats: Vec<SeatView>,
}

impl From<&Stage> for StageView {
    fn from(s: &Stage) -> Self {
        Self {
            stage_id: s.stage_id.as_uuid(),
            name: s.name.clone(),
            location: s.location.clone(),
            rows: s.grid.rows(),
            cols: s.grid.cols(),
        }
    }
}

impl From<&Concert> for ConcertView {
    fn from(c: &Concert) -> Self {
        Self {
            concert_id: c.concert_id.as_uuid(),
            seller_id: c.seller_id.as_uuid(),
            stage_id: c.stage_id.as_uuid(),
            concert_name: c.concert_name.clone(),
            runtime: c.runtime_minutes,
            start_date: c.start_date,
            end_date: c.end_date,
            price: c.price,
            concert_image: c.concert_image.clone(),
            created_at: c.audit.created_at,
        }
    }
}

impl From<&Schedule> for ScheduleView {
    fn from(s: &Schedule) -> Self {
        Self {
            schedule_id: s.schedule_id.as_uuid(),
            concert_id: s.concert_id.as_uuid(),
            concert_date: s.concert_date,
            concert_time: s.concert_time,
            sale_opens_at: s.sale_opens_at,
        }
    }
}

/// Publishes, then writes through; see the module comment.
async fn record(s: &AppState, event: Event) -> ApiResult<()> {
    s.publisher
        .publish(&event)
        .await
        .map_err(ApiError::unavailable)?;
    let written = match &event {
        Event::StageCreated(e) => s.catalog.put_stage(&Stage::from(e)).await,
        Event::ConcertCreated(e) => s.catalog.put_concert(&Concert::from(e)).await,
        Event::ScheduleCreated(e) => s.catalog.put_schedule(&Schedule::from(e)).await,
        // Only catalog events are recorded here.
        _ => Ok(()),
    };
    if let Err(e) = written {
        // The event is durable; the catalog sink will write the row.
        tracing::warn!(error = %e, event = event.name(), "write-through failed; the sink will repair it");
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/stages", tag = "catalog", request_body = CreateStageRequest, security(("bearer" = [])),
    responses((status = 201, body = CreateStageResponse), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_stage(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateStageRequest>,
) -> ApiResult<(StatusCode, Json<CreateStageResponse>)> {
    caller.require_seller()?;
    let new = NewStage::parse(&req.name, &req.location, req.rows, req.cols)?;
    let stage_id: StageId = new_id();
    record(
        &s,
        Event::StageCreated(StageCreated {
            meta: meta(Some(caller.user_id)),
            stage_id,
            seller_id: caller.user_id,
            name: new.name,
            location: new.location,
            rows: new.grid.rows(),
            cols: new.grid.cols(),
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateStageResponse {
            stage_id: stage_id.as_uuid(),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/concerts", tag = "catalog", request_body = CreateConcertRequest, security(("bearer" = [])),
    responses((status = 201, body = CreateConcertResponse), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_concert(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateConcertRequest>,
) -> ApiResult<(StatusCode, Json<CreateConcertResponse>)> {
    caller.require_seller()?;
    let new = NewConcert::parse(
        StageId::from_uuid(req.stage_id),
        &req.concert_name,
        req.runtime,
        req.start_date,
        req.end_date,
        req.price,
        req.concert_image.as_deref(),
    )?;
    let stage = s
        .catalog
        .stage(new.stage_id)
        .await?
        .filter(|st| !st.audit.is_deleted())
        .ok_or_else(|| ApiError::not_found("STAGE_NOT_FOUND", "no such stage"))?;
    caller.require_owner(stage.seller_id)?;
    let concert_id: ConcertId = new_id();
    record(
        &s,
        Event::ConcertCreated(ConcertCreated {
            meta: meta(Some(caller.user_id)),
            concert_id,
            seller_id: caller.user_id,
            stage_id: stage.stage_id,
            concert_name: new.concert_name,
            runtime_minutes: new.runtime_minutes,
            start_date: new.start_date,
            end_date: new.end_date,
            price: new.price,
            concert_image: new.concert_image,
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateConcertResponse {
            concert_id: concert_id.as_uuid(),
        }),
    ))
}

fn parse_time(raw: &str) -> Result<NaiveTime, ApiError> {
    NaiveTime::parse_from_str(raw, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(raw, "%H:%M"))
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_SCHEDULE",
                "concert_time must be HH:MM or HH:MM:SS",
            )
        })
}

#[utoipa::path(post, path = "/api/v1/concerts/{concert_id}/schedules", tag = "catalog", request_body = CreateScheduleRequest,
    security(("bearer" = [])), params(("concert_id" = Uuid, Path)),
    responses((status = 201, body = CreateScheduleResponse), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_schedule(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(concert_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CreateScheduleRequest>,
) -> ApiResult<(StatusCode, Json<CreateScheduleResponse>)> {
    caller.require_seller()?;
    let concert = live_concert(&s, ConcertId::from_uuid(concert_id)).await?;
    caller.require_owner(concert.seller_id)?;
    let new = NewSchedule::parse(
        &concert,
        req.concert_date,
        parse_time(&req.concert_time)?,
        req.sale_opens_at,
    )?;
    let stage = s
        .catalog
        .stage(concert.stage_id)
        .await?
        .ok_or_else(|| ApiError::unavailable("a concert's stage is missing"))?;
    let schedule_id: ScheduleId = new_id();
    record(
        &s,
        Event::ScheduleCreated(ScheduleCreated {
            meta: meta(Some(caller.user_id)),
            schedule_id,
            concert_id: concert.concert_id,
            seller_id: concert.seller_id,
            stage_id: stage.stage_id,
            rows: stage.grid.rows(),
            cols: stage.grid.cols(),
            price: concert.price,
            concert_date: new.concert_date,
            concert_time: new.concert_time,
            sale_opens_at: new.sale_opens_at,
        }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateScheduleResponse {
            schedule_id: schedule_id.as_uuid(),
        }),
    ))
}

async fn live_concert(s: &AppState, id: ConcertId) -> ApiResult<Concert> {
    s.catalog
        .concert(id)
        .await?
        .filter(|c| !c.audit.is_deleted())
        .ok_or_else(|| ApiError::not_found("CONCERT_NOT_FOUND", "no such concert"))
}

#[utoipa::path(get, path = "/api/v1/concerts", tag = "catalog", params(PageQuery),
    responses((status = 200, body = ConcertPage), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_concerts(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ConcertPage>> {
    let page = q.page.unwrap_or(0);
    let size = q.size.unwrap_or(20);
    if !(0..=100_000).contains(&page) {
        return Err(ApiError::bad_request(
            "INVALID_PAGE",
            "page must be between 0 and 100000",
        ));
    }
    if !(1..=100).contains(&size) {
        return Err(ApiError::bad_request(
            "INVALID_PAGE",
            "size must be between 1 and 100",
        ));
    }
    // Both fit in u32: bounded above.
    let listed = s.catalog.list_concerts(page as u32, size as u32).await?;
    Ok(Json(ConcertPage {
        items: listed.items.iter().map(ConcertView::from).collect(),
        page: listed.page,
        size: listed.size,
        total: listed.total,
    }))
}

#[utoipa::path(get, path = "/api/v1/concerts/{concert_id}", tag = "catalog", params(("concert_id" = Uuid, Path)),
    responses((status = 200, body = ConcertDetail), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_concert(
    State(s): State<AppState>,
    ApiPath(concert_id): ApiPath<Uuid>,
) -> ApiResult<Json<ConcertDetail>> {
    let concert = live_concert(&s, ConcertId::from_uuid(concert_id)).await?;
    let stage = s.catalog.stage(concert.stage_id).await?;
    let schedules = s.catalog.schedules_of(concert.concert_id).await?;
    Ok(Json(ConcertDetail {
        concert: ConcertView::from(&concert),
        stage: stage.as_ref().map(StageView::from),
        schedules: schedules
            .iter()
            .filter(|sc| !sc.audit.is_deleted())
            .map(ScheduleView::from)
            .collect(),
    }))
}

/// The seat map of a schedule, from the read model the schedule processor
/// feeds: AVAILABLE, HELD or SOLD per seat. It never asks the processor.
#[utoipa::path(get, path = "/api/v1/schedules/{schedule_id}/seats", tag = "catalog", params(("schedule_id" = Uuid, Path)),
    responses((status = 200, body = SeatMap), (status = 404, body = crate::error::ErrorBody)))]
pub async fn seat_map(
    State(s): State<AppState>,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> ApiResult<Json<SeatMap>> {
    let not_found = || ApiError::not_found("SCHEDULE_NOT_FOUND", "no such schedule");
    let schedule = s
        .catalog
        .schedule(ScheduleId::from_uuid(schedule_id))
        .await?
        .filter(|sc| !sc.audit.is_deleted())
        .ok_or_else(not_found)?;
    let concert = s
        .catalog
        .concert(schedule.concert_id)
        .await?
        .ok_or_else(not_found)?;
    let stage = s
        .catalog
        .stage(concert.stage_id)
        .await?
        .ok_or_else(not_found)?;
    let (rows, cols) = (stage.grid.rows(), stage.grid.cols());
    // Until its processor has taken the schedule in, every seat is on sale.
    let decided = s.schedule_reads.seat_map(schedule.schedule_id).await?;
    let status = |i: usize| {
        decided
            .as_ref()
            .and_then(|m| m.seats.get(i).copied())
            .unwrap_or(SeatStatus::Available)
    };
    let seats = (1..=rows)
        .flat_map(|row| (1..=cols).map(move |col| (row, col)))
        .enumerate()
        .map(|(i, (row, col))| SeatView {
            row,
            col,
            status: status(i),
        })
        .collect();
    Ok(Json(SeatMap { rows, cols, seats }))
}
