//! Writing frames to a WebSocket (the relay's and this client's): whatever is queued goes out in
//! one write.

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Frames written before a flush at most, so a producer that never pauses still sees its first
/// frames leave.
const FRAMES_PER_FLUSH: usize = 256;

/// Writes the frames of `queue` to `sink` until the queue closes or a write fails, then closes
/// the sink. `on_frame` sees each frame before it is written.
///
/// Frames already waiting are written together and flushed once. A flush per frame is a
/// `send(2)` per frame, and a wake-up of the reader on the other side per frame: per event, in a
/// sync. tungstenite still writes its buffer out whenever it passes its write buffer size, so
/// this holds no more than that in memory.
pub async fn write_frames<S>(
    mut queue: mpsc::Receiver<Message>,
    mut sink: S,
    mut on_frame: impl FnMut(&Message),
) where
    S: Sink<Message> + Unpin,
{
    'queue: while let Some(first) = queue.recv().await {
        on_frame(&first);
        if sink.feed(first).await.is_err() {
            break;
        }
        for _ in 1..FRAMES_PER_FLUSH {
            let Ok(next) = queue.try_recv() else {
                break;
            };
            on_frame(&next);
            if sink.feed(next).await.is_err() {
                break 'queue;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
