//! Stages, concerts and schedules: what sellers put on sale.

use crate::audit::Audit;
use crate::error::ValidationError;
use crate::ids::{ConcertId, ScheduleId, StageId, UserId};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// Upper bounds that keep one schedule's seat map (held in a single processor's
/// memory and served as one JSON document) within reason.
pub const MAX_ROWS: u16 = 500;
pub const MAX_COLS: u16 = 500;
pub const MAX_SEATS: u32 = 100_000;
/// Prices are whole units of the currency (KRW has no minor unit).
pub const MAX_PRICE: i64 = 100_000_000;
pub const MAX_RUNTIME_MINUTES: u32 = 24 * 60;

/// The seat grid of a stage. Rows and columns are 1-based everywhere outside
/// this type's indexing helpers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatGrid {
    rows: u16,
    cols: u16,
}

impl SeatGrid {
    pub fn new(rows: i64, cols: i64) -> Result<Self, ValidationError> {
        if rows < 1 || rows > i64::from(MAX_ROWS) {
            return Err(ValidationError::new(
                "INVALID_STAGE_SIZE",
                "rows",
                format!("rows must be between 1 and {MAX_ROWS}"),
            ));
        }
        if cols < 1 || cols > i64::from(MAX_COLS) {
            return Err(ValidationError::new(
                "INVALID_STAGE_SIZE",
                "cols",
                format!("cols must be between 1 and {MAX_COLS}"),
            ));
        }
        if rows * cols > i64::from(MAX_SEATS) {
            return Err(ValidationError::new(
                "INVALID_STAGE_SIZE",
                "rows",
                format!("a stage has at most {MAX_SEATS} seats"),
            ));
        }
        // Both fit in u16: checked against MAX_ROWS/MAX_COLS above.
        Ok(Self {
            rows: rows as u16,
            cols: cols as u16,
        })
    }

    pub const fn rows(&self) -> u16 {
        self.rows
    }
    pub const fn cols(&self) -> u16 {
        self.cols
    }
    pub const fn seat_count(&self) -> u32 {
        self.rows as u32 * self.cols as u32
    }

    /// Whether a 1-based (row, col) lies on the stage.
    pub const fn contains(&self, row: u16, col: u16) -> bool {
        row >= 1 && row <= self.rows && col >= 1 && col <= self.cols
    }
}

/// The sale state of one seat as buyers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub stage_id: StageId,
    pub seller_id: UserId,
    pub name: String,
    pub location: String,
    pub grid: SeatGrid,
    pub audit: Audit,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concert {
    pub concert_id: ConcertId,
    pub seller_id: UserId,
    pub stage_id: StageId,
    pub concert_name: String,
    pub runtime_minutes: u32,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub price: i64,
    pub concert_image: Option<String>,
    pub audit: Audit,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub concert_date: NaiveDate,
    pub concert_time: NaiveTime,
    /// `None`: on sale from the moment it is created.
    pub sale_opens_at: Option<DateTime<Utc>>,
    pub audit: Audit,
}

impl Schedule {
    /// When the show starts. Dates and times are read as UTC until venues carry a
    /// time zone of their own.
    pub fn starts_at(&self) -> DateTime<Utc> {
        self.concert_date.and_time(self.concert_time).and_utc()
    }
}

fn bounded_text(
    raw: &str,
    code: &'static str,
    field: &'static str,
    max: usize,
) -> Result<String, ValidationError> {
    let s = raw.trim();
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(ValidationError::new(
            code,
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(
            code,
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(s.to_string())
}

/// A validated request to create a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewStage {
    pub name: String,
    pub location: String,
    pub grid: SeatGrid,
}

impl NewStage {
    pub fn parse(
        name: &str,
        location: &str,
        rows: i64,
        cols: i64,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            name: bounded_text(name, "INVALID_STAGE", "name", 200)?,
            location: bounded_text(location, "INVALID_STAGE", "location", 500)?,
            grid: SeatGrid::new(rows, cols)?,
        })
    }
}

/// A validated request to create a concert (the stage's existence and ownership
/// are checked by the caller, which has the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConcert {
    pub stage_id: StageId,
    pub concert_name: String,
    pub runtime_minutes: u32,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub price: i64,
    pub concert_image: Option<String>,
}

impl NewConcert {
    pub fn parse(
        stage_id: StageId,
        concert_name: &str,
        runtime_minutes: i64,
        start_date: NaiveDate,
        end_date: NaiveDate,
        price: i64,
        concert_image: Option<&str>,
    ) -> Result<Self, ValidationError> {
        if runtime_minutes < 1 || runtime_minutes > i64::from(MAX_RUNTIME_MINUTES) {
            return Err(ValidationError::new(
                "INVALID_CONCERT",
                "runtime",
                format!("runtime must be 1 to {MAX_RUNTIME_MINUTES} minutes"),
            ));
        }
        if end_date < start_date {
            return Err(ValidationError::new(
                "INVALID_CONCERT",
                "end_date",
                "end_date must not be before start_date",
            ));
        }
        if !(0..=MAX_PRICE).contains(&price) {
            return Err(ValidationError::new(
                "INVALID_PRICE",
                "price",
                format!("price must be between 0 and {MAX_PRICE}"),
            ));
        }
        let concert_image = match concert_image.map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                let ok = url.len() <= 2048
                    && (url.starts_with("https://") || url.starts_with("http://"))
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    return Err(ValidationError::new(
                        "INVALID_CONCERT",
                        "concert_image",
                        "concert_image must be an http(s) URL of at most 2048 characters",
                    ));
                }
                Some(url.to_string())
            }
        };
        Ok(Self {
            stage_id,
            concert_name: bounded_text(concert_name, "INVALID_CONCERT", "concert_name", 200)?,
            // Fits: bounded by MAX_RUNTIME_MINUTES above.
            runtime_minutes: runtime_minutes as u32,
            start_date,
            end_date,
            price,
            concert_image,
        })
    }
}

/// A validated request to add a schedule to a concert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSchedule {
    pub concert_date: NaiveDate,
    pub concert_time: NaiveTime,
    pub sale_opens_at: Option<DateTime<Utc>>,
}

impl NewSchedule {
    pub fn parse(
        concert: &Concert,
        concert_date: NaiveDate,
        concert_time: NaiveTime,
        sale_opens_at: Option<DateTime<Utc>>,
    ) -> Result<Self, ValidationError> {
        if concert_date < concert.start_date || concert_date > concert.end_date {
            return Err(ValidationError::new(
                "INVALID_SCHEDULE",
                "concert_date",
                "concert_date must lie between the concert's start_date and end_date",
            ));
        }
        let starts_at = concert_date.and_time(concert_time).and_utc();
        if let Some(opens) = sale_opens_at {
            if opens >= starts_at {
                return Err(ValidationError::new(
                    "INVALID_SCHEDULE",
                    "sale_opens_at",
                    "sale_opens_at must be before the show starts",
                ));
            }
        }
        Ok(Self {
            concert_date,
            concert_time,
            sale_opens_at,
        })
    }
}

/// Rows are rebuilt from their creation events by the sinks, so the event must
/// carry every column.
impl From<&crate::events::StageCreated> for Stage {
    fn from(e: &crate::events::StageCreated) -> Self {
        Stage {
            stage_id: e.stage_id,
            seller_id: e.seller_id,
            name: e.name.clone(),
            location: e.location.clone(),
            grid: SeatGrid {
                rows: e.rows,
                cols: e.cols,
            },
            audit: Audit::created(e.meta.occurred_at, e.meta.actor),
        }
    }
}

impl From<&crate::events::ConcertCreated> for Concert {
    fn from(e: &crate::events::ConcertCreated) -> Self {
        Concert {
            concert_id: e.concert_id,
            seller_id: e.seller_id,
            stage_id: e.stage_id,
            concert_name: e.concert_name.clone(),
            runtime_minutes: e.runtime_minutes,
            start_date: e.start_date,
            end_date: e.end_date,
            price: e.price,
            concert_image: e.concert_image.clone(),
            audit: Audit::created(e.meta.occurred_at, e.meta.actor),
        }
    }
}

impl From<&crate::events::ScheduleCreated> for Schedule {
    fn from(e: &crate::events::ScheduleCreated) -> Self {
        Schedule {
            schedule_id: e.schedule_id,
            concert_id: e.concert_id,
            concert_date: e.concert_date,
            concert_time: e.concert_time,
            sale_opens_at: e.sale_opens_at,
            audit: Audit::created(e.meta.occurred_at, e.meta.actor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn concert() -> Concert {
        let at = "2026-01-01T00:00:00Z".parse().unwrap();
        Concert {
            concert_id: ConcertId::from_uuid(Uuid::nil()),
            seller_id: UserId::from_uuid(Uuid::nil()),
            stage_id: StageId::from_uuid(Uuid::nil()),
            concert_name: "x".into(),
            runtime_minutes: 90,
            start_date: date("2026-12-01"),
            end_date: date("2026-12-03"),
            price: 10,
            concert_image: None,
            audit: Audit::created(at, None),
        }
    }

    #[test]
    fn stage_size_limits() {
        assert!(SeatGrid::new(1, 1).is_ok());
        assert!(SeatGrid::new(0, 5).is_err());
        assert!(SeatGrid::new(5, -1).is_err());
        assert!(SeatGrid::new(501, 1).is_err());
        assert!(
            SeatGrid::new(500, 500).is_err(),
            "250k seats is over MAX_SEATS"
        );
        assert_eq!(SeatGrid::new(200, 500).unwrap().seat_count(), 100_000);
    }

    proptest! {
        #[test]
        fn grid_contains_exactly_its_seats(rows in 1i64..=50, cols in 1i64..=50, r in 0u16..60, c in 0u16..60) {
            let g = SeatGrid::new(rows, cols).unwrap();
            prop_assert_eq!(g.contains(r, c), r >= 1 && i64::from(r) <= rows && c >= 1 && i64::from(c) <= cols);
        }
    }

    #[test]
    fn concert_rules() {
        let s = StageId::from_uuid(Uuid::nil());
        let ok = NewConcert::parse(
            s,
            " Show ",
            120,
            date("2026-12-01"),
            date("2026-12-02"),
            50_000,
            Some(""),
        );
        let ok = ok.unwrap();
        assert_eq!(ok.concert_name, "Show");
        assert_eq!(ok.concert_image, None);
        let e = NewConcert::parse(
            s,
            "Show",
            120,
            date("2026-12-02"),
            date("2026-12-01"),
            1,
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "end_date");
        let e = NewConcert::parse(
            s,
            "Show",
            120,
            date("2026-12-01"),
            date("2026-12-01"),
            -1,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, "INVALID_PRICE");
        let e = NewConcert::parse(
            s,
            "Show",
            0,
            date("2026-12-01"),
            date("2026-12-01"),
            1,
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "runtime");
        let e = NewConcert::parse(s, "", 10, date("2026-12-01"), date("2026-12-01"), 1, None)
            .unwrap_err();
        assert_eq!(e.field, "concert_name");
        let e = NewConcert::parse(
            s,
            "x",
            10,
            date("2026-12-01"),
            date("2026-12-01"),
            1,
            Some("javascript:alert(1)"),
        )
        .unwrap_err();
        assert_eq!(e.field, "concert_image");
    }

    #[test]
    fn schedule_rules() {
        let c = concert();
        let t: NaiveTime = "19:30:00".parse().unwrap();
        assert!(NewSchedule::parse(&c, date("2026-12-02"), t, None).is_ok());
        assert_eq!(
            NewSchedule::parse(&c, date("2026-12-04"), t, None)
                .unwrap_err()
                .field,
            "concert_date"
        );
        let late = "2026-12-02T19:30:00Z".parse().unwrap();
        assert_eq!(
            NewSchedule::parse(&c, date("2026-12-02"), t, Some(late))
                .unwrap_err()
                .field,
            "sale_opens_at"
        );
        let early = "2026-11-30T10:00:00Z".parse().unwrap();
        assert!(NewSchedule::parse(&c, date("2026-12-02"), t, Some(early)).is_ok());
    }
}
