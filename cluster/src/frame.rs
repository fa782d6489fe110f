//! Length-prefixed frames: a big-endian `u32` length, then that many bytes of postcard.
//! A length above `FRAME_BYTES_MAX` is garbage on the wire and closes the connection.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::FRAME_BYTES_MAX;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut bytes = vec![0u8; 4];
    let bytes = postcard::to_extend(value, std::mem::take(&mut bytes))?;
    let length = bytes
        .len()
        .checked_sub(4)
        .expect("four prefix bytes were written first");
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(length));
    }
    let mut bytes = bytes;
    let prefix = u32::try_from(length)
        .expect("bounded by FRAME_BYTES_MAX")
        .to_be_bytes();
    bytes[..4].copy_from_slice(&prefix);
    Ok(bytes)
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(frame).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream (before any byte of a frame).
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut prefix = [0u8; 4];
    // Only an end of stream before the first byte is a clean close; inside a prefix it is not.
    if reader.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut prefix[1..]).await?;
    let length = usize::try_from(u32::from_be_bytes(prefix)).expect("u32 fits usize");
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(postcard::from_bytes(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_garbage() {
        let frame = encode(&("hello".to_string(), 42u64)).expect("encodes");
        let mut reader = frame.as_slice();
        let value: Option<(String, u64)> = read_frame(&mut reader).await.expect("decodes");
        assert_eq!(value, Some(("hello".to_string(), 42)));
        // A huge length prefix is refused before allocating.
        let mut huge = &[0xff, 0xff, 0xff, 0xff, 0][..];
        assert!(matches!(
            read_frame::<_, u64>(&mut huge).await,
            Err(FrameError::TooLarge(_))
        ));
        // Garbage bodies fail to decode.
        let mut garbage = &[0, 0, 0, 2, 0xff, 0xff][..];
        assert!(read_frame::<_, (String, u64)>(&mut garbage).await.is_err());
        // Clean end of stream.
        let mut empty = &[][..];
        assert!(read_frame::<_, u64>(&mut empty)
            .await
            .expect("eof is clean")
            .is_none());
    }
}
