//! Typed access to the columns of an analysis query's result. DataFusion may hand back a
//! string column as `Utf8View` or a count as another integer width; these read text in
//! place, cast numbers to the type the analysis reads, and turn a mismatch into an error
//! instead of a panic.

use sonde_store::StoreError;
use sonde_store::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StringViewArray, UInt32Array,
};
use sonde_store::arrow::compute::cast;
use sonde_store::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt32Type};

fn unexpected(what: &str, col: &dyn Array) -> StoreError {
    StoreError::Query(format!(
        "internal: expected {what}, the query returned {}",
        col.data_type()
    ))
}

/// An array as text.
pub(crate) fn utf8_array(col: &ArrayRef) -> Result<StringArray, StoreError> {
    let c = cast(col, &DataType::Utf8)?;
    c.as_string_opt::<i32>()
        .cloned()
        .ok_or_else(|| unexpected("text", c.as_ref()))
}

/// An array as 64-bit integers.
pub(crate) fn i64_array(col: &ArrayRef) -> Result<Int64Array, StoreError> {
    let c = cast(col, &DataType::Int64)?;
    c.as_primitive_opt::<Int64Type>()
        .cloned()
        .ok_or_else(|| unexpected("integers", c.as_ref()))
}

/// A text column read in place (a cast of `Utf8View`, which DataFusion often returns, to
/// `Utf8` copies every string).
pub(crate) enum Text {
    /// `Utf8`, or another type cast to it.
    Utf8(StringArray),
    /// `Utf8View`.
    View(StringViewArray),
}

impl Text {
    /// Whether row `i` holds a value.
    pub(crate) fn is_valid(&self, i: usize) -> bool {
        match self {
            Text::Utf8(a) => a.is_valid(i),
            Text::View(a) => a.is_valid(i),
        }
    }

    /// Whether row `i` is null.
    pub(crate) fn is_null(&self, i: usize) -> bool {
        !self.is_valid(i)
    }

    /// The text of row `i`, empty when null.
    pub(crate) fn value(&self, i: usize) -> &str {
        if !self.is_valid(i) {
            return "";
        }
        match self {
            Text::Utf8(a) => a.value(i),
            Text::View(a) => a.value(i),
        }
    }
}

/// Column `i` as text, read in place where it can be.
pub(crate) fn utf8(batch: &RecordBatch, i: usize) -> Result<Text, StoreError> {
    text(batch.column(i))
}

/// An array as text, read in place where it can be.
pub(crate) fn text(c: &ArrayRef) -> Result<Text, StoreError> {
    if let Some(a) = c.as_string_view_opt() {
        return Ok(Text::View(a.clone()));
    }
    if let Some(a) = c.as_string_opt::<i32>() {
        return Ok(Text::Utf8(a.clone()));
    }
    utf8_array(c).map(Text::Utf8)
}

/// Column `i` as 64-bit integers.
pub(crate) fn i64s(batch: &RecordBatch, i: usize) -> Result<Int64Array, StoreError> {
    i64_array(batch.column(i))
}

/// An array as floats.
pub(crate) fn f64_array(col: &ArrayRef) -> Result<Float64Array, StoreError> {
    let c = cast(col, &DataType::Float64)?;
    c.as_primitive_opt::<Float64Type>()
        .cloned()
        .ok_or_else(|| unexpected("numbers", c.as_ref()))
}

/// Column `i` as floats.
pub(crate) fn f64s(batch: &RecordBatch, i: usize) -> Result<Float64Array, StoreError> {
    f64_array(batch.column(i))
}

/// An array as unsigned 32-bit integers.
pub(crate) fn u32_array(col: &ArrayRef) -> Result<UInt32Array, StoreError> {
    let c = cast(col, &DataType::UInt32)?;
    c.as_primitive_opt::<UInt32Type>()
        .cloned()
        .ok_or_else(|| unexpected("positions", c.as_ref()))
}

/// Column `i` as lists.
pub(crate) fn list(batch: &RecordBatch, i: usize) -> Result<ListArray, StoreError> {
    let c = batch.column(i);
    c.as_list_opt::<i32>()
        .cloned()
        .ok_or_else(|| unexpected("a list", c.as_ref()))
}
