//! The conditional tasks as inference sees them: which task an adapter was distilled for, how many channels
//! its condition has, and the conditions built from a user's image. How a training pair is made from a dataset
//! item lives with the datasets in codi-train.

use serde::{Deserialize, Serialize};

/// A conditional task; the condition is a channel-major image in [0, 1] of the target's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Super-resolution: the condition is the degraded image at full size (3 channels).
    #[serde(rename = "sr")]
    SuperResolution,
    /// Inpainting: the image with holes greyed, then the mask (4 channels).
    #[serde(rename = "inpaint")]
    Inpainting,
    /// Instructed editing: the source image (3 channels); the instruction is the text.
    Edit,
    /// Depth-to-image: a depth map (1 channel).
    Depth,
    /// Any ControlNet-style condition given as an image (edges, pose, segmentation, …): 3 channels, taken
    /// as it is. Trained from an image folder's `conditioning_image` column.
    #[serde(rename = "controlnet")]
    ControlNet,
}

impl TaskKind {
    /// Every task, in the order reports list them.
    pub const ALL: [TaskKind; 5] = [
        TaskKind::SuperResolution,
        TaskKind::Inpainting,
        TaskKind::Edit,
        TaskKind::Depth,
        TaskKind::ControlNet,
    ];

    /// The tasks the embedded data makes pairs for (the embedded default has an adapter for each).
    pub const EMBEDDED: [TaskKind; 4] = [
        TaskKind::SuperResolution,
        TaskKind::Inpainting,
        TaskKind::Edit,
        TaskKind::Depth,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::SuperResolution => "sr",
            TaskKind::Inpainting => "inpaint",
            TaskKind::Edit => "edit",
            TaskKind::Depth => "depth",
            TaskKind::ControlNet => "controlnet",
        }
    }

    /// The task with this [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Channels of the condition image (the adapter's `conditioning_channels`).
    pub fn condition_channels(self) -> usize {
        match self {
            TaskKind::SuperResolution | TaskKind::Edit | TaskKind::ControlNet => 3,
            TaskKind::Inpainting => 4,
            TaskKind::Depth => 1,
        }
    }
}

/// The inpainting condition: the image with the masked pixels (mask > 0.5) set to 0.5, then the mask as a
/// fourth channel. pixels: 3 × s × s, mask: s × s → 4 × s × s
pub fn inpainting_condition(pixels: &[f32], mask: &[f32]) -> Vec<f32> {
    let plane = mask.len();
    pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| if mask[i % plane] > 0.5 { 0.5 } else { v })
        .chain(mask.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_channels_match_the_conditions() {
        for t in TaskKind::ALL {
            assert_eq!(TaskKind::from_name(t.name()), Some(t));
        }
        assert_eq!(TaskKind::from_name("deblur"), None);
        let cond = inpainting_condition(&[0.2; 3 * 4], &[1.0, 0.0, 0.0, 1.0]);
        assert_eq!(cond.len(), TaskKind::Inpainting.condition_channels() * 4);
        assert_eq!(&cond[..4], &[0.5, 0.2, 0.2, 0.5]);
        assert_eq!(&cond[12..], &[1.0, 0.0, 0.0, 1.0]);
    }
}
