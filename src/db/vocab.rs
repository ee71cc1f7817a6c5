//! The domain's vocabularies as PostgreSQL `text`: rows decode straight into `SyncStatus`,
//! `DataType`, …, and binds encode their stored names, so no state travels as a bare string.
//! Kept here, not in `domain`, which knows no sqlx.

use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
};

use crate::domain::{
    BatchState, DataType, FailureReason, IntegrationStatus, MatchMethod, OnRunning, SourceType,
    SweepState, SyncMode, SyncStatus, SyncTrigger, TickOutcome,
};

macro_rules! text_columns {
    ($($name:ty),+ $(,)?) => {$(
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    )+};
}

text_columns!(
    BatchState,
    DataType,
    FailureReason,
    IntegrationStatus,
    MatchMethod,
    OnRunning,
    SourceType,
    SweepState,
    SyncMode,
    SyncStatus,
    SyncTrigger,
    TickOutcome,
);
