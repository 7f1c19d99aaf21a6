//! Derive macros for Herald. Use them through the `herald` crate, which re-exports them:
//! `use herald::Event;`.
//!
//! The derive is written as parse → model → generate: `parse` reads the attributes into an
//! `EventModel` (checking the event type against the protocol), `generate` turns the
//! model into the trait impl, and `expand` turns any error into `compile_error!`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{DeriveInput, LitStr, spanned::Spanned};

/// Derives `herald::Event` for a type that also derives `Serialize`, `Deserialize` and
/// `JsonSchema`.
///
/// | attribute | where | meaning |
/// | --- | --- | --- |
/// | `#[event(type = "source.connected")]` | type, required | the event type: lower-case tokens `[a-z0-9][a-z0-9_-]*` joined by `.`, at most 128 characters |
/// | `#[event(subject)]` | one field | the field's `Display` value becomes the CloudEvents `subject` (`ce-subject`) |
///
/// The type string is checked at compile time; a bad one is an error that says what is wrong.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(&input).into()
}

fn expand(input: &DeriveInput) -> TokenStream2 {
    match parse(input) {
        Ok(model) => generate(&model),
        Err(error) => error.to_compile_error(),
    }
}

/// What the derive knows about one event type.
struct EventModel<'a> {
    input: &'a DeriveInput,
    event_type: LitStr,
    subject_field: Option<syn::Member>,
}

fn parse(input: &DeriveInput) -> syn::Result<EventModel<'_>> {
    let mut event_type: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("type") {
                if event_type.is_some() {
                    return Err(meta.error("`type` is given twice; an event has one type"));
                }
                let value: LitStr = meta.value()?.parse()?;
                if let Err(why) = check_event_type(&value.value()) {
                    return Err(syn::Error::new(
                        value.span(),
                        format!(
                            "invalid event type {:?}: {why}. An event type is lower-case tokens \
                             `[a-z0-9][a-z0-9_-]*` joined by `.`, at most 128 characters, \
                             e.g. \"source.connected\" (Herald protocol, section 2)",
                            value.value()
                        ),
                    ));
                }
                event_type = Some(value);
                Ok(())
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "?".to_owned());
                Err(meta.error(format!(
                    "unknown event attribute `{name}`; the type-level attribute is \
                     `#[event(type = \"source.connected\")]`"
                )))
            }
        })?;
    }
    let event_type = event_type.ok_or_else(|| {
        syn::Error::new(
            input.ident.span(),
            "missing event type: add `#[event(type = \"source.connected\")]` (your type's name, \
             lower-case tokens joined by `.`) to this type",
        )
    })?;
    let subject_field = parse_subject_field(input)?;
    Ok(EventModel {
        input,
        event_type,
        subject_field,
    })
}

fn parse_subject_field(input: &DeriveInput) -> syn::Result<Option<syn::Member>> {
    let mut found: Option<syn::Member> = None;
    let fields = match &input.data {
        syn::Data::Struct(data) => Some(&data.fields),
        _ => None,
    };
    let Some(fields) = fields else {
        return Ok(None);
    };
    for (index, field) in fields.iter().enumerate() {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("subject") {
                    if found.is_some() {
                        return Err(meta.error(
                            "`#[event(subject)]` is on two fields; mark only the field that \
                             names the entity the event is about",
                        ));
                    }
                    found = Some(match &field.ident {
                        Some(ident) => syn::Member::Named(ident.clone()),
                        None => syn::Member::Unnamed(syn::Index {
                            index: index as u32,
                            span: field.span(),
                        }),
                    });
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown field attribute; the only field attribute is `#[event(subject)]`",
                    ))
                }
            })?;
        }
    }
    Ok(found)
}

fn generate(model: &EventModel<'_>) -> TokenStream2 {
    let name = &model.input.ident;
    let (impl_generics, type_generics, where_clause) = model.input.generics.split_for_impl();
    let event_type = &model.event_type;
    let subject = model.subject_field.as_ref().map(|member| {
        quote! {
            fn ce_subject(&self) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(::std::string::ToString::to_string(&self.#member))
            }
        }
    });
    quote! {
        impl #impl_generics ::herald::__private::Event for #name #type_generics #where_clause {
            const TYPE: &'static str = #event_type;
            #subject
        }
    }
}

/// The event-type rule of the protocol, section 2. Kept identical to
/// `herald::EventType::new`; both are tested against the same cases.
fn check_event_type(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".to_owned());
    }
    if value.len() > 128 {
        return Err(format!("it is {} characters long", value.len()));
    }
    for token in value.split('.') {
        let Some(first) = token.chars().next() else {
            return Err("it has an empty token (two dots in a row, or a dot at an end)".to_owned());
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            let hint = if first.is_ascii_uppercase() {
                " (upper case is not allowed)"
            } else if first == '*' || first == '>' {
                " (wildcards match types when subscribing; an event has one concrete type)"
            } else {
                ""
            };
            return Err(format!(
                "token {token:?} starts with {first:?}{hint}; a token starts with a-z or 0-9"
            ));
        }
        if let Some(bad) = token
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            let hint = if bad.is_ascii_uppercase() {
                " (upper case is not allowed)"
            } else {
                ""
            };
            return Err(format!("token {token:?} contains {bad:?}{hint}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_event_type;

    #[test]
    fn event_type_rule() {
        for good in [
            "source.connected",
            "user.signup.v2",
            "billing.invoice_paid",
            "a",
            "0-x",
        ] {
            assert!(check_event_type(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Source.connected",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a.*",
            "_a",
            &"a".repeat(129),
        ] {
            assert!(check_event_type(bad).is_err(), "{bad}");
        }
    }
}
