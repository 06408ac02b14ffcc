//! Zero-copy JSON items: decoded structs that borrow their strings from the
//! record's payload instead of copying them.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use yoke::{Yoke, Yokeable};

use crate::error::Result;
use crate::pipeline::{Encoder, Transformer};
use crate::record::Record;
use crate::transform::json;

/// A JSON record decoded into `T`, with `T`'s borrowed strings pointing into
/// the payload, which the view owns; see [`JsonViewTransformer`].
///
/// `T` is the borrowing struct at `'static` (`Click<'static>`), as
/// [`Yokeable`] has it; [`get`](Self::get) hands it out at the view's own
/// lifetime.
pub struct JsonView<T: for<'a> Yokeable<'a>> {
    decoded: Yoke<T, Vec<u8>>,
}

impl<T: for<'a> Yokeable<'a>> JsonView<T> {
    /// The decoded struct, borrowing from [`payload`](Self::payload).
    pub fn get(&self) -> &<T as Yokeable<'_>>::Output {
        self.decoded.get()
    }

    /// The record's payload, the JSON the struct was decoded from.
    pub fn payload(&self) -> &[u8] {
        self.decoded.backing_cart()
    }
}

impl<T> fmt::Debug for JsonView<T>
where
    T: for<'a> Yokeable<'a>,
    for<'a> <T as Yokeable<'a>>::Output: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonView").field(self.get()).finish()
    }
}

/// Decodes JSON payloads into a struct that borrows its strings from the
/// payload (`Item = JsonView<T>`), so that a record costs no allocation or
/// copy per string field; as an [`Encoder`] it writes `T` back as compact
/// JSON, as [`JsonTransformer`](crate::JsonTransformer) does.
///
/// Derive [`Yokeable`] (the `yoke` crate with its `derive` feature) and
/// `Deserialize` on the borrowing struct. Borrow strings as
/// `Cow<'a, str>` with `#[serde(borrow)]`: a string with escapes (`\"`,
/// `\n`, `\u00e9`) cannot point into the payload and is then decoded into
/// an owned one, while a `&'a str` field makes such a record fail to
/// decode.
///
/// In a pipeline the item takes the record's payload over
/// ([`Transformer::take_item`]): no allocation and no copy, unless the
/// payload is shared or a slice of a larger buffer (a sub-record of a KPL
/// aggregate), which is copied once. Called directly,
/// [`to_item`](Transformer::to_item) copies the payload.
///
/// ```
/// use std::borrow::Cow;
/// use kinesis_connectors_core::{JsonViewTransformer, Record, Transformer};
///
/// #[derive(yoke::Yokeable, serde::Deserialize)]
/// struct Click<'a> {
///     #[serde(borrow)]
///     user: Cow<'a, str>,
///     #[serde(borrow)]
///     page: Cow<'a, str>,
/// }
///
/// let json = JsonViewTransformer::<Click<'static>>::new();
/// let click = json.to_item(&Record::new(r#"{"user":"u1","page":"/a\"b"}"#, "u1", 1u64))?;
/// assert_eq!(click.get().user, "u1");
/// assert!(matches!(click.get().user, Cow::Borrowed(_)));
/// assert_eq!(click.get().page, "/a\"b"); // an escape: owned
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
pub struct JsonViewTransformer<T> {
    _item: PhantomData<fn() -> T>,
}

crate::transform::typed_transformer_impls!(
    JsonViewTransformer,
    "A zero-copy JSON transformer for `T`."
);

impl<T> Transformer for JsonViewTransformer<T>
where
    T: for<'a> Yokeable<'a> + Send + Sync + 'static,
    for<'a> <T as Yokeable<'a>>::Output: Deserialize<'a>,
{
    type Item = JsonView<T>;

    fn to_item(&self, record: &Record) -> Result<JsonView<T>> {
        decode(record.data.to_vec()).map_err(|(error, _)| json::decode_error(record, error))
    }

    fn take_item(&self, record: &mut Record) -> Result<JsonView<T>> {
        // O(1) for a payload read from Kinesis: the `Bytes` is the only
        // owner of its `Vec`.
        let payload = Vec::from(std::mem::take(&mut record.data));
        decode(payload).map_err(|(error, payload)| {
            record.data = payload;
            json::decode_error(record, error)
        })
    }
}

/// Decodes `payload` into a view of it; on an error, gives the payload back
/// (copied: the view's cart is gone) for the bad-record policy.
fn decode<T>(payload: Vec<u8>) -> std::result::Result<JsonView<T>, (serde_json::Error, Bytes)>
where
    T: for<'a> Yokeable<'a>,
    for<'a> <T as Yokeable<'a>>::Output: Deserialize<'a>,
{
    Yoke::try_attach_to_cart(payload, |data: &[u8]| {
        json::decode(data).map_err(|error| (error, Bytes::copy_from_slice(data)))
    })
    .map(|decoded| JsonView { decoded })
}

/// Encoding needs `Serialize`; decoding alone does not.
impl<T> Encoder for JsonViewTransformer<T>
where
    T: for<'a> Yokeable<'a> + Send + Sync + 'static,
    for<'a> <T as Yokeable<'a>>::Output: Deserialize<'a> + Serialize,
{
    fn from_item(&self, item: &JsonView<T>, out: &mut Vec<u8>) -> Result<()> {
        json::write_item(out, item.get())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::error::Error;

    #[derive(Yokeable, Deserialize, Serialize, Clone, Debug)]
    struct Click<'a> {
        id: u64,
        #[serde(borrow)]
        user: Cow<'a, str>,
    }

    fn view_of(json: &str) -> Result<JsonView<Click<'static>>> {
        JsonViewTransformer::<Click<'static>>::new().to_item(&Record::new(
            json.to_owned(),
            "k",
            7u64,
        ))
    }

    #[test]
    fn strings_point_into_the_payload() -> Result<()> {
        let view = view_of(r#"{"id":1,"user":"u-1"}"#)?;
        let Cow::Borrowed(user) = &view.get().user else {
            panic!("the user was copied: {view:?}");
        };
        let payload = view.payload().as_ptr_range();
        assert!(
            payload.contains(&user.as_ptr()),
            "{user} lies outside the payload"
        );
        assert_eq!(view.get().id, 1);
        Ok(())
    }

    #[test]
    fn take_item_moves_the_payload_in_without_copying_it() -> Result<()> {
        let payload = br#"{"id":2,"user":"u-2"}"#.to_vec();
        let at = payload.as_ptr();
        let mut record = Record::new(payload, "k", 2u64);
        let view = JsonViewTransformer::<Click<'static>>::new().take_item(&mut record)?;
        assert_eq!(view.payload().as_ptr(), at, "the payload was copied");
        assert!(record.data.is_empty());
        assert_eq!(view.get().user, "u-2");
        Ok(())
    }

    #[test]
    fn take_item_gives_the_payload_back_on_an_error() {
        let mut record = Record::new(&b"{\"id\": oops}"[..], "k", 3u64);
        let result = JsonViewTransformer::<Click<'static>>::new().take_item(&mut record);
        assert!(matches!(result, Err(Error::Transform { .. })));
        assert_eq!(record.data, &b"{\"id\": oops}"[..]);
    }

    #[test]
    fn escaped_strings_are_decoded_into_owned_ones() -> Result<()> {
        let view = view_of(r#"{"id":3,"user":"a\"b"}"#)?;
        assert!(matches!(view.get().user, Cow::Owned(_)));
        assert_eq!(view.get().user, "a\"b");
        Ok(())
    }

    #[test]
    fn invalid_json_is_a_transform_error_naming_the_record() {
        let error = view_of(r#"{"id":"#).map(|_| ()).unwrap_err();
        assert!(matches!(error, Error::Transform { .. }), "{error:?}");
        assert!(error.to_string().contains("record 7"), "{error}");
    }

    #[test]
    fn encodes_back_to_compact_json() -> Result<()> {
        let view = view_of(r#"{ "id": 4, "user": "u-4", "extra": true }"#)?;
        let mut out = Vec::new();
        JsonViewTransformer::<Click<'static>>::new().from_item(&view, &mut out)?;
        assert_eq!(out, br#"{"id":4,"user":"u-4"}"#);
        Ok(())
    }
}
