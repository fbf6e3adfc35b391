//! The protobuf codec of the generated client and server: prost's, except that a request the
//! server cannot decode is INVALID_ARGUMENT (the client sent something malformed), where tonic
//! reports INTERNAL, which would blame the daemon.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct ApiaryCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for ApiaryCodec<T, U> {
    fn default() -> Self {
        ApiaryCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for ApiaryCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MalformedIsInvalid<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MalformedIsInvalid(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug)]
pub struct MalformedIsInvalid<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for MalformedIsInvalid<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => {
                Status::invalid_argument(format!("malformed message: {}", s.message()))
            }
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
